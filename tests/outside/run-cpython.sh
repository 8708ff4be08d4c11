#!/bin/bash
# Runs CPython's kqueue tests against kqueued: test_kqueue, test_selectors'
# KqueueSelectorTestCase and asyncio's KqueueEventLoopTests, with
# select.kqueue / select.kevent / select.KQ_* replaced by the project's Python
# module (client/python/kqueued) before selectors and asyncio are imported
# (cpython/run_tests.py). Builds and installs the project into a scratch
# prefix, starts a private daemon, and prints passed / failed / skipped and
# the list of failures.
#
#   tests/outside/run-cpython.sh [options] [--python PY] CPYTHON_TESTS
#
# CPYTHON_TESTS holds CPython's `test` package of the SAME version as the
# interpreter PY (default: python3):
#   - Debian: apt-get install libpython3.11-testsuite, then pass
#     /usr/lib/python3.11 with --python /usr/bin/python3.11;
#   - a CPython tree of that version, e.g.
#     git clone --branch v3.11.2 --depth 1 https://github.com/python/cpython
#     then pass the tree (its Lib/ is used).
# A version mismatch is refused. Nothing is downloaded by this script.
#
# Options: see tests/outside/lib.sh (--prefix, --work, --keep, --timeout;
# default 120 s per test).
set -u
. "$(dirname "$0")/lib.sh"

outside_usage() { sed -n '2,/^set -u/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

python=python3
rest=()
while [ $# -gt 0 ]; do
  case $1 in
    --python) [ $# -ge 2 ] || outside_die "--python needs a value"; python=$2; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
outside_parse "${rest[@]}"
[ ${#outside_args[@]} -eq 1 ] || { outside_usage >&2; exit 2; }
src=${outside_args[0]}
if [ -f "$src/Lib/test/test_kqueue.py" ]; then
  lib=$src/Lib
elif [ -f "$src/test/test_kqueue.py" ]; then
  lib=$src
else
  outside_die "$src holds neither Lib/test/test_kqueue.py nor test/test_kqueue.py"
fi
lib=$(cd "$lib" && pwd)
timeout=${outside_timeout:-120}

# The tests must come from the interpreter's own version.
py_version=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])') ||
  outside_die "cannot run $python"
if [ -f "$lib/../Include/patchlevel.h" ]; then
  tree_version=$(sed -n 's/^#define PY_VERSION[[:space:]]*"\([0-9.]*\).*"/\1/p' "$lib/../Include/patchlevel.h")
else
  # An installed library: the interpreter whose stdlib it is.
  stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')
  if [ "$(cd "$stdlib" && pwd)" = "$lib" ]; then
    tree_version=$py_version
  else
    tree_version=$(dpkg-query -W -f '${Version}' "libpython${py_version%.*}-testsuite" 2>/dev/null |
      sed 's/^\([0-9]*\.[0-9]*\.[0-9]*\).*/\1/')
  fi
fi
[ -n "$tree_version" ] || outside_die "cannot tell which CPython version $lib is"
[ "$tree_version" = "$py_version" ] ||
  outside_die "$lib is CPython $tree_version but $python is $py_version (use --python)"
echo "== CPython $py_version ($python), tests from $lib"

TESTS=(
  test.test_kqueue
  test.test_selectors.KqueueSelectorTestCase
  test.test_asyncio.test_events.KqueueEventLoopTests
)

outside_install
outside_start_daemon
logs=$outside_work/cpython-logs
mkdir -p "$logs"
for t in "${TESTS[@]}"; do
  log=$logs/$t.log
  dir=$(mktemp -d "$outside_work/run-XXXXXX")
  # The module comes from the source tree (client/python), like the headers.
  (cd "$dir" && PYTHONPATH="$outside_repo/client/python" exec timeout -k 10 $((timeout * 100)) \
    "$python" "$outside_here/cpython/run_tests.py" --timeout "$timeout" "$lib" "$t") > "$log" 2>&1
  status=$?
  rm -rf "$dir"
  n=0
  while IFS= read -r line; do
    line=${line#cpython-result: }
    id=${line%%: *}
    verdict=${line#"$id": }
    short=${id#test.}
    n=$((n + 1))
    case $verdict in
      passed) outside_result "$short" passed; echo "ok   $short" ;;
      skipped:*) outside_result "$short" skipped "${verdict#skipped: }"; echo "SKIP $short (${verdict#skipped: })" ;;
      *) outside_result "$short" failed "${verdict#failed: }"; echo "FAIL $short: ${verdict#failed: }" ;;
    esac
  done < <(grep '^cpython-result: ' "$log")
  if [ "$n" = 0 ]; then
    outside_result "$t" failed "no test ran (status $status; log $log)"
    echo "FAIL $t: no test ran"
  fi
done

outside_summary "CPython $py_version kqueue tests"
