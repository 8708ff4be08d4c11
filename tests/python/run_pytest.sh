#!/bin/bash
# Runs the Python binding's tests with pytest: under `bazel test` from the
# runfiles tree, or by hand from a checkout (after building //daemon:kqueued):
#   tests/python/run_pytest.sh [pytest args...]
# Exits with pytest's status; "no tests collected" (5) counts as a failure.
set -u

if [[ -n "${TEST_SRCDIR:-}" ]]; then
  root="${TEST_SRCDIR}/${TEST_WORKSPACE:-kqueued}"
  export KQUEUED_BIN="${KQUEUED_BIN:-${root}/daemon/kqueued}"
else
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  export KQUEUED_BIN="${KQUEUED_BIN:-${root}/bazel-bin/daemon/kqueued}"
fi

# Debian's interpreter carries python3-pytest; a python3 earlier on PATH
# (pyenv, a venv) may not.
python=""
for candidate in /usr/bin/python3 "$(command -v python3 2>/dev/null)"; do
  if [[ -n "${candidate}" && -x "${candidate}" ]] &&
     "${candidate}" -c 'import pytest' 2>/dev/null; then
    python="${candidate}"
    break
  fi
done
if [[ -z "${python}" ]]; then
  echo "run_pytest.sh: no python3 with pytest (apt-get install python3-pytest)" >&2
  exit 1
fi

export PYTHONPATH="${root}/client/python${PYTHONPATH:+:${PYTHONPATH}}"
export PYTHONDONTWRITEBYTECODE=1

args=(-q -rs -p no:cacheprovider)
if [[ -n "${XML_OUTPUT_FILE:-}" ]]; then
  args+=("--junitxml=${XML_OUTPUT_FILE}")
fi

cd "${root}/tests/python" || exit 1
"${python}" -m pytest "${args[@]}" "$@" .
status=$?
if [[ ${status} -eq 5 ]]; then
  echo "run_pytest.sh: pytest collected no tests" >&2
  exit 1
fi
exit ${status}
