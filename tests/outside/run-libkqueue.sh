#!/bin/bash
# Runs libkqueue's regression suite (test/) against kqueued: builds and
# installs the project into a scratch prefix, starts a private daemon,
# compiles libkqueue's test/*.c against the project's <sys/event.h> and
# library (not against libkqueue), runs every test on its own, and prints
# passed / failed / skipped and the list of failures.
#
#   tests/outside/run-libkqueue.sh [options] LIBKQUEUE_TREE
#
# LIBKQUEUE_TREE is a libkqueue source tree you fetched, e.g.
#   git clone --branch v2.7.0 https://github.com/mheily/libkqueue
# (the last run used tag v2.7.0; docs/outside-suites.md). Only its test/
# directory is used. Nothing is downloaded by this script.
#
# libkqueue's test program runs a unit's tests in order in one process and
# stops at the first failure; its later tests may rely on what the earlier
# ones set up. So each unit runs as one process ("UNIT:FIRST-LAST", the
# program's own range syntax) in a fresh directory under a time limit
# (--timeout, default 120 s); after a failure the rest of the unit runs in a
# new process, and a failure right at such a restart says so.
#
# Options: see tests/outside/lib.sh (--prefix, --work, --keep, --timeout).
set -u
. "$(dirname "$0")/lib.sh"

outside_usage() { sed -n '2,/^set -u/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

outside_parse "$@"
[ ${#outside_args[@]} -eq 1 ] || { outside_usage >&2; exit 2; }
src=${outside_args[0]}
[ -f "$src/test/main.c" ] && [ -f "$src/test/common.h" ] ||
  outside_die "$src is not a libkqueue tree (no test/main.c)"
src=$(cd "$src" && pwd)
timeout=${outside_timeout:-120}

# The program's units, in its own order.
UNITS=(kqueue socket signal proc timer vnode write user threading)

# Tests that exercise libkqueue's own implementation rather than the kqueue
# API, as "unit:test_name|reason"; reported as skipped, not run.
NOT_KQUEUE_API=(
)

not_kqueue_api() {
  local entry
  for entry in "${NOT_KQUEUE_API[@]}"; do
    if [ "${entry%%|*}" = "$1" ]; then
      echo "${entry#*|}"
      return 0
    fi
  done
  return 1
}

outside_install
bin=$outside_work/libkqueue-bin
mkdir -p "$bin"
# test/config.h.in has one switch: the suite's allowances for native-kqueue
# bugs, off as in a Linux build of libkqueue.
echo "#define WITH_NATIVE_KQUEUE_BUGS 0" > "$bin/config.h"
sources=()
for f in "$src"/test/*.c; do
  case $(basename "$f") in
    lockstat.c|proc_win32.c|signal_win32.c) ;;  # not part of the POSIX program
    common.c) ;;                                # below, with its glue
    *) sources+=("$f") ;;
  esac
done
cflags=(-O2 -g -std=gnu11 -w -D_GNU_SOURCE -I "$bin" -I "$src/test" -I "$outside_prefix/include")
echo "== compiling libkqueue's test program from $src/test"
{
  ${CC:-cc} "${cflags[@]}" -include "$outside_here/libkqueue/common-filters.h" \
    -c "$src/test/common.c" -o "$bin/common.o" &&
  ${CC:-cc} "${cflags[@]}" "${sources[@]}" "$bin/common.o" "$outside_here/libkqueue/glue.c" \
    -L "$outside_prefix/lib" -Wl,-rpath,"$outside_prefix/lib" -lkqueue -lpthread -lm \
    -o "$bin/libkqueue-test"
} > "$bin/compile.log" 2>&1 || {
  cat "$bin/compile.log" >&2
  outside_die "libkqueue's test program does not compile against the project's header"
}

outside_start_daemon
logs=$outside_work/libkqueue-logs
mkdir -p "$logs"
# Runs "UNIT:FIRST-LAST" in a fresh directory; the log is $2.
run_range() {
  local dir
  dir=$(mktemp -d "$outside_work/run-XXXXXX")
  (cd "$dir" && exec timeout -k 5 "$timeout" "$bin/libkqueue-test" "$1") > "$2" 2>&1
  local status=$?
  rm -rf "$dir"
  return $status
}

# The failure message of a log: the lines after the test's own line, without
# the program's banner and the backtrace addresses.
why_failed() {
  sed -n "/^$2: test_/,\$p" "$1" | sed -e 1d -e '/^\[0x[0-9a-f]*\]$/d' -e '/^\*\*\*\*\* ERROR/d' \
    -e '/TEST FAILED/d' -e '/^$/d' | head -n 4 | tr '\n' ' ' | sed 's/  */ /g'
}

for unit in "${UNITS[@]}"; do
  first=0
  after=
  while :; do
    log=$logs/$unit-from-$first.log
    run_range "$unit:$first-999999" "$log"
    status=$?
    # Every test the run started, in order: "N name".
    started=$(sed -n 's/^\([0-9][0-9]*\): \(test_[A-Za-z0-9_]*\)().*/\1 \2/p' "$log")
    if [ -z "$started" ]; then
      if [ "$status" != 0 ]; then
        outside_result "$unit:#$first" failed "no test started, status $status"
        echo "FAIL $unit:#$first (no test started, status $status)"
      fi
      break
    fi
    last=$(tail -n 1 <<< "$started" | cut -d' ' -f1)
    while read -r n name; do
      id=$unit:$name
      if [ "$n" != "$last" ] || [ "$status" = 0 ]; then
        if reason=$(not_kqueue_api "$id"); then
          outside_result "$id" skipped "$reason"; echo "SKIP $id ($reason)"
        else
          outside_result "$id" passed; echo "ok   $id"
        fi
        continue
      fi
      # The run stopped in this test.
      if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        why="timed out after $timeout s"
      else
        why=$(why_failed "$log" "$n")
      fi
      [ "$n" = "$first" ] && [ -n "$after" ] && why="$why (run without the unit's earlier tests: $after)"
      if reason=$(not_kqueue_api "$id"); then
        outside_result "$id" skipped "$reason"; echo "SKIP $id ($reason)"
      else
        outside_result "$id" failed "$why"; echo "FAIL $id: $why"
      fi
    done <<< "$started"
    [ "$status" = 0 ] && break
    # libkqueue's program stops at a failure: go on with the next test in a
    # new process (state the unit's earlier tests set up is then missing).
    after="started after #$last failed"
    first=$((last + 1))
  done
done

outside_summary "libkqueue test/"
