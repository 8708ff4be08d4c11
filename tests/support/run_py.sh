#!/bin/bash
# Runs one stdlib-only Python test script (unittest) with Debian's python3,
# from the runfiles tree under `bazel test` or from a checkout:
#   tests/support/run_py.sh [--unshare-mount] tests/tools/kqstat_test.py
set -u
if [[ -n "${TEST_SRCDIR:-}" ]]; then
  cd "${TEST_SRCDIR}/${TEST_WORKSPACE:-kqueued}" || exit 1
fi
export PYTHONDONTWRITEBYTECODE=1
# --unshare-mount: run the script in a private mount namespace of its own.
if [[ "${1:-}" == --unshare-mount ]]; then
  shift
  exec unshare --mount --propagation private /usr/bin/python3 "$@"
fi
exec /usr/bin/python3 "$@"
