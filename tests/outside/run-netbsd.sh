#!/bin/bash
# Runs NetBSD's kqueue regression tests (src/tests/kernel/kqueue, ATF C
# programs) against kqueued: builds and installs the project into a scratch
# prefix, starts a private daemon, compiles every t_*.c with the project's
# <sys/event.h> and library plus this directory's ATF stand-in (atf/) and
# NetBSD compatibility header (netbsd/), runs every case, and prints
# passed / failed / skipped and the list of failures.
#
#   tests/outside/run-netbsd.sh [options] NETBSD_TESTS
#
# NETBSD_TESTS is a NetBSD source tree you fetched (its root, or its tests/
# directory): it must hold tests/h_macros.h and tests/kernel/kqueue/, and
# t_timer.c needs tests/lib/libc/gen/isqemu.h. Get it from
# https://github.com/NetBSD/src (or the CVS tree at cvs.NetBSD.org); only
# those paths are needed, e.g.
#   git clone --depth 1 --filter=blob:none --sparse https://github.com/NetBSD/src
#   git -C src sparse-checkout set tests/kernel/kqueue tests/lib/libc/gen
#   git -C src checkout
# (h_macros.h sits in tests/, which sparse-checkout includes as a parent).
# Nothing is downloaded by this script.
#
# Options: see tests/outside/lib.sh (--prefix, --work, --keep, --timeout;
# default timeout 120 s per case), and --repeat N: run every case N times
# and count it passed only if every run passed (timing bugs show up as
# "failed in k of N runs"). Cases that cannot apply on Linux are
# listed in NOT_ON_LINUX below with the reason and reported as skipped.
set -u
. "$(dirname "$0")/lib.sh"

outside_usage() { sed -n '2,/^set -u/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

repeat=1
rest=()
while [ $# -gt 0 ]; do
  case $1 in
    --repeat) [ $# -ge 2 ] || outside_die "--repeat needs a value"; repeat=$2; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
case $repeat in ''|*[!0-9]*|0) outside_die "--repeat needs a positive number" ;; esac
outside_parse "${rest[@]}"
[ ${#outside_args[@]} -eq 1 ] || { outside_usage >&2; exit 2; }
src=${outside_args[0]}
if [ -d "$src/tests/kernel/kqueue" ]; then
  tests=$src/tests
elif [ -d "$src/kernel/kqueue" ]; then
  tests=$src
else
  outside_die "$src holds neither tests/kernel/kqueue nor kernel/kqueue"
fi
tests=$(cd "$tests" && pwd)
[ -f "$tests/h_macros.h" ] || outside_die "$tests/h_macros.h is missing"
timeout=${outside_timeout:-120}

# Cases that cannot apply on Linux, as "program:case|reason". None is
# skipped for being hard: only for lacking a Linux counterpart.
NOT_ON_LINUX=(
  "t_vnode:rename_over_self_hardlink|rename(2) of a name onto another hard link of the same file does nothing on Linux (POSIX allows it; NetBSD removes the source name), so there is no change for NOTE_WRITE/NOTE_LINK to report"
)

not_on_linux() {
  local entry
  for entry in "${NOT_ON_LINUX[@]}"; do
    if [ "${entry%%|*}" = "$1" ]; then
      echo "${entry#*|}"
      return 0
    fi
  done
  return 1
}

outside_install
bin=$outside_work/netbsd-bin
mkdir -p "$bin"
cc=${CC:-cc}
cflags=(-O2 -g -std=gnu11 -w -include "$outside_here/netbsd/compat.h"
  -I "$outside_here/netbsd/include" -I "$outside_here/atf" -I "$tests"
  -I "$outside_prefix/include")
# t_timer.c includes "isqemu.h", which NetBSD's build finds in
# tests/lib/libc/gen; include it in the tree you fetched.
[ -d "$tests/lib/libc/gen" ] && cflags+=(-I "$tests/lib/libc/gen")
ldflags=(-L "$outside_prefix/lib" -Wl,-rpath,"$outside_prefix/lib" -lkqueue -lpthread -lutil)

"$cc" -O2 -g -std=gnu11 -Wall -Wextra -c "$outside_here/atf/atf-c.c" -o "$bin/atf-c.o" ||
  outside_die "the ATF stand-in does not compile"

echo "== compiling the NetBSD test programs from $tests/kernel/kqueue"
programs=()
while IFS= read -r file; do
  rel=${file#"$tests/kernel/kqueue/"}
  name=${rel%.c}
  exe=$bin/$(echo "$name" | tr / _)
  if "$cc" "${cflags[@]}" "$file" "$bin/atf-c.o" "${ldflags[@]}" -o "$exe" \
      > "$exe.compile.log" 2>&1; then
    programs+=("$name|$exe")
  else
    outside_result "$name" failed "does not compile: $(grep -m1 error "$exe.compile.log")"
  fi
done < <(find "$tests/kernel/kqueue" -name 't_*.c' | LC_ALL=C sort)

outside_start_daemon
logs=$outside_work/netbsd-logs
mkdir -p "$logs"
for entry in "${programs[@]}"; do
  name=${entry%%|*}
  exe=${entry#*|}
  while IFS= read -r tc; do
    id=$name:$tc
    if reason=$(not_on_linux "$id"); then
      outside_result "$id" skipped "not on Linux: $reason"
      echo "SKIP $id (not on Linux: $reason)"
      continue
    fi
    fails=0
    first_fail=
    verdict=passed
    for r in $(seq 1 "$repeat"); do
      log=$logs/$(echo "$id" | tr /: __).$r.log
      "$exe" -t "$timeout" -w "$outside_work" "$tc" > "$log" 2>&1
      line=$(grep -m1 '^atf-result: ' "$log")
      line=${line#atf-result: "$tc": }
      case $line in
        passed|expected_failure:*) ;;
        skipped:*) verdict=$line; break ;;
        failed:*) fails=$((fails + 1)); [ -n "$first_fail" ] || first_fail=${line#failed: } ;;
        *) fails=$((fails + 1)); [ -n "$first_fail" ] || first_fail="no result (log: $log)" ;;
      esac
    done
    if [ "${verdict%%:*}" = skipped ]; then
      outside_result "$id" skipped "${verdict#skipped: }"; echo "SKIP $id (${verdict#skipped: })"
    elif [ "$fails" = 0 ]; then
      outside_result "$id" passed; echo "ok   $id"
    else
      [ "$repeat" = 1 ] || first_fail="failed in $fails of $repeat runs; first: $first_fail"
      outside_result "$id" failed "$first_fail"; echo "FAIL $id: $first_fail"
    fi
  done < <("$exe" -l)
done

outside_summary "NetBSD tests/kernel/kqueue"
