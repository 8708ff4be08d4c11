#!/bin/bash
# Runs libevent's own regression tests on libevent's kqueue backend served
# by kqueued: builds and installs the project into a scratch prefix, starts
# a private daemon, builds libevent (CMake) against the project's
# <sys/event.h> and library so that it compiles its kqueue backend
# (kqueue.c), checks that libevent really selects that backend, runs the
# test programs libevent runs per backend (test-eof, test-weof, test-time,
# test-changelist, test-fdleak, test-init, test-closed, test-dumpevents
# with check-dumpevents.py, test-ratelim's four checks) and every case of
# `regress`, plain and in debug mode (EVENT_DEBUG_MODE=1), with every other
# backend forbidden, and prints passed / failed / skipped and the failures.
#
#   tests/outside/run-libevent.sh [options] LIBEVENT_TREE
#
# LIBEVENT_TREE is a libevent source tree you fetched, e.g.
#   git clone --branch release-2.1.12-stable https://github.com/libevent/libevent
# (the last runs used release-2.1.12-stable and release-2.2.1-alpha;
# docs/outside-suites.md). Nothing is downloaded by this script; it needs
# cmake, make, cc and python3 (libevent's build generates code with it).
# OpenSSL and zlib are used when their development files are installed
# (libssl-dev, zlib1g-dev), else their tests are not built; mbedTLS is off.
#
# Every regress case runs as its own `regress --timeout SEC CASE` (libevent's
# test runner forks each case anyway), so one hanging case costs only its
# time limit. A case that fails is run again alone --rerun times (default 3)
# on kqueue and as often on epoll (Linux's own backend, same build): one
# that fails on epoll in every rerun as well is not kqueued's and is listed
# as "fails on epoll too" (not counted as failed); every other failure is
# counted, with how often it failed alone on each backend. Cases libevent
# itself turns off by default (live network, fine timing) are reported as
# skipped without running, as libevent's runner does.
#
# Options: see tests/outside/lib.sh (--prefix, --work, --keep, --timeout;
# default 60 s per case), --rerun N (0: no reruns, then every failure
# counts), --jobs N (make -j, default 2).
set -u
. "$(dirname "$0")/lib.sh"

outside_usage() { sed -n '2,/^set -u/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

rerun=3
jobs=2
rest=()
while [ $# -gt 0 ]; do
  case $1 in
    --rerun) [ $# -ge 2 ] || outside_die "--rerun needs a value"; rerun=$2; shift 2 ;;
    --jobs) [ $# -ge 2 ] || outside_die "--jobs needs a value"; jobs=$2; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done
case $rerun in ''|*[!0-9]*) outside_die "--rerun needs a number" ;; esac
case $jobs in ''|*[!0-9]*|0) outside_die "--jobs needs a positive number" ;; esac
outside_parse "${rest[@]}"
[ ${#outside_args[@]} -eq 1 ] || { outside_usage >&2; exit 2; }
src=${outside_args[0]}
[ -f "$src/kqueue.c" ] && [ -f "$src/CMakeLists.txt" ] && [ -f "$src/test/regress_main.c" ] &&
  [ -f "$src/test/tinytest.c" ] ||
  outside_die "$src is not a libevent tree (no kqueue.c, CMakeLists.txt, test/regress_main.c)"
src=$(cd "$src" && pwd)
timeout=${outside_timeout:-60}
for tool in cmake make python3; do
  command -v "$tool" > /dev/null || outside_die "$tool is needed (apt-get install $tool)"
done

outside_install
# libevent's configure step runs a small kqueue program (CheckWorkingKqueue:
# EVFILT_WRITE on a pipe filled and then drained), so the daemon serves
# from here on.
outside_start_daemon

build=$outside_work/libevent-build
mkdir -p "$build"
link="-L$outside_prefix/lib -Wl,-rpath,$outside_prefix/lib -Wl,--no-as-needed -lkqueue"
cmake_args=(
  -DCMAKE_BUILD_TYPE=Release
  -DEVENT__LIBRARY_TYPE=SHARED
  -DEVENT__DISABLE_BENCHMARK=ON
  -DEVENT__DISABLE_SAMPLES=ON
  -DEVENT__DISABLE_MBEDTLS=ON
  -DEVENT__DISABLE_TESTS=OFF
  -DEVENT__DISABLE_REGRESS=OFF
  "-DCMAKE_C_FLAGS=-I$outside_prefix/include"
  # The kqueue() probe is a link test (try_compile); it sees the linker
  # flags only under CMP0056, which libevent's minimum CMake version leaves
  # unset.
  -DCMAKE_POLICY_DEFAULT_CMP0056=NEW
  "-DCMAKE_EXE_LINKER_FLAGS=$link"
  "-DCMAKE_SHARED_LINKER_FLAGS=$link"
)
[ -f /usr/include/openssl/ssl.h ] || cmake_args+=(-DEVENT__DISABLE_OPENSSL=ON)
echo "== configuring libevent ($src) against $outside_prefix"
(cd "$build" && cmake "${cmake_args[@]}" "$src") > "$build/cmake.log" 2>&1 || {
  tail -n 30 "$build/cmake.log" >&2
  outside_die "cmake failed (log: $build/cmake.log)"
}
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
[ "$(cache EVENT__HAVE_KQUEUE)" = 1 ] ||
  outside_die "libevent's configure found no kqueue() in $outside_prefix (log: $build/cmake.log)"
[ "$(cache EVENT__HAVE_WORKING_KQUEUE)" = 1 ] ||
  outside_die "libevent's configure found kqueue() not working with pipes (log: $build/cmake.log)"
grep -E 'Available event backends|OpenSSL lib|Found ZLIB' "$build/cmake.log" | sed 's/^-- /   /'
echo "== building libevent (make -j$jobs)"
make -C "$build" -j"$jobs" > "$build/make.log" 2>&1 || {
  grep -E 'error|Error' "$build/make.log" | head -n 20 >&2
  outside_die "libevent does not build against the project's header (log: $build/make.log)"
}
bin=$build/bin
[ -x "$bin/regress" ] || outside_die "the build made no bin/regress (log: $build/make.log)"

# Only kqueue: libevent skips every backend named by EVENT_NO<BACKEND>.
only_kqueue() {
  export EVENT_NOEPOLL=1 EVENT_NOPOLL=1 EVENT_NOSELECT=1 EVENT_NODEVPOLL=1 EVENT_NOEVPORT=1 \
    EVENT_NOWIN32=1
  unset EVENT_NOKQUEUE EVENT_EPOLL_USE_CHANGELIST EVENT_PRECISE_TIMER EVENT_DEBUG_MODE
}
# Only epoll (the baseline for a failure).
only_epoll() {
  only_kqueue
  unset EVENT_NOEPOLL
  export EVENT_NOKQUEUE=1
}

only_kqueue
# event_base_new() reports the backend it chose; with every other backend
# forbidden it is kqueue or nothing. Refuse to count anything otherwise.
method=$(EVENT_SHOW_METHOD=1 "$bin/test-init" 2>&1 | sed -n 's/.*libevent using: //p')
[ "$method" = kqueue ] ||
  outside_die "libevent did not select its kqueue backend (it said: '${method:-nothing}'; is the daemon serving?)"
echo "== libevent uses its kqueue backend"

logs=$outside_work/libevent-logs
mkdir -p "$logs"
run_dir=$(mktemp -d "$outside_work/run-XXXXXX")

# run_prog NAME LOG CMD...: runs in the scratch directory under the limit.
run_prog() {
  local log=$2
  shift 2
  (cd "$run_dir" && exec timeout -k 5 "$timeout" "$@") > "$log" 2>&1
}

# The test programs libevent's CMake file runs per backend, and test-ratelim's
# four checks (run with the default backend there: kqueue here).
kqueue_early_close=0
grep -q EV_FEATURE_EARLY_CLOSE "$src/kqueue.c" && kqueue_early_close=1
for prog in test-eof test-closed test-weof test-time test-changelist test-fdleak test-init; do
  if [ "$prog" = test-closed ] && [ "$kqueue_early_close" = 0 ]; then
    # It asks for EV_FEATURE_EARLY_CLOSE, gets no base and exits 0.
    outside_result "$prog" skipped "libevent's kqueue backend has no EV_FEATURE_EARLY_CLOSE; the program then tests nothing"
    echo "SKIP $prog (kqueue backend has no EV_FEATURE_EARLY_CLOSE)"
    continue
  fi
  run_prog "$prog" "$logs/$prog.log" "$bin/$prog"
  status=$?
  if [ "$status" = 0 ]; then
    outside_result "$prog" passed; echo "ok   $prog"
  else
    why="status $status"; [ "$status" = 124 ] && why="timed out after $timeout s"
    outside_result "$prog" failed "$why: $(tail -n 2 "$logs/$prog.log" | tr '\n' ' ')"
    echo "FAIL $prog ($why)"
  fi
done
run_prog test-dumpevents "$logs/test-dumpevents.log" \
  bash -c "set -o pipefail; '$bin/test-dumpevents' | python3 '$src/test/check-dumpevents.py'"
if [ $? = 0 ]; then
  outside_result test-dumpevents passed; echo "ok   test-dumpevents"
else
  outside_result test-dumpevents failed "$(tail -n 2 "$logs/test-dumpevents.log" | tr '\n' ' ')"
  echo "FAIL test-dumpevents"
fi
ratelim=(
  "group_lim|-g 30000 -n 30 -t 100 --check-grouplimit 1000 --check-stddev 100"
  "con_lim|-c 1000 -n 30 -t 100 --check-connlimit 50 --check-stddev 50"
  "group_con_lim|-c 1000 -g 30000 -n 30 -t 100 --check-grouplimit 1000 --check-connlimit 50 --check-stddev 50"
  "group_con_lim_drain|-c 1000 -g 35000 -n 30 -t 100 -G 500 --check-grouplimit 1000 --check-connlimit 50 --check-stddev 50"
)
for entry in "${ratelim[@]}"; do
  name=test-ratelim:${entry%%|*}
  # shellcheck disable=SC2086
  run_prog "$name" "$logs/$name.log" "$bin/test-ratelim" ${entry#*|}
  status=$?
  if [ "$status" = 0 ]; then
    outside_result "$name" passed; echo "ok   $name"
  else
    outside_result "$name" failed "status $status: $(grep -i -m 2 -E 'fail|error|stddev' "$logs/$name.log" | tr '\n' ' ')"
    echo "FAIL $name"
  fi
done

# regress: every case, as libevent lists them.
"$bin/regress" --list-tests > "$logs/regress-list.txt" 2>&1
cases=$(sed -n 's/^    \([^ ]*\)$/\1/p' "$logs/regress-list.txt")
off=$(sed -n 's/^    \([^ ]*\)  *(\(Off by default\|DISABLED\)).*/\1/p' "$logs/regress-list.txt")
[ -n "$cases" ] || outside_die "regress --list-tests listed nothing (see $logs/regress-list.txt)"

# run_case CASE LOG: 0 passed, 1 failed, 2 skipped (by the case itself).
run_case() {
  run_prog "$1" "$2" "$bin/regress" --timeout "$timeout" "$1"
  local status=$?
  if [ "$status" = 0 ]; then
    grep -q "^$1: .*SKIPPED" "$2" && return 2
    return 0
  fi
  return 1
}
# Why a case failed, from its log.
case_why() {
  local why
  why=$(grep -m 1 -E '^ *FAIL |\[Lost connection!\]|\[atexit failure!\]' "$1" | sed 's/^ *//')
  [ -n "$why" ] || why="exit status $(tail -n 1 "$1")"
  # (A failure message may lack its newline; the runner's tally of a case
  # run alone then follows on the same line.)
  printf '%s' "$why" | sed -e "s|$src/||g" -e 's|1/1 TESTS FAILED.*||'

}
# rerun_on MODE CASE BACKEND: how many of $rerun solo runs failed.
rerun_on() {
  local mode=$1 c=$2 backend=$3 i n=0
  for i in $(seq 1 "$rerun"); do
    if [ "$backend" = epoll ]; then only_epoll; else only_kqueue; fi
    [ "$mode" = debug ] && export EVENT_DEBUG_MODE=1
    run_case "$c" "$logs/rerun.log"
    [ $? = 1 ] && n=$((n + 1))
  done
  only_kqueue
  echo "$n"
}

epoll_too=()
for mode in plain debug; do
  echo "== regress ($mode)"
  for c in $cases; do
    id=$c; [ "$mode" = debug ] && id="debug:$c"
    log=$logs/regress-$mode-${c//\//_}.log
    only_kqueue
    [ "$mode" = debug ] && export EVENT_DEBUG_MODE=1
    run_case "$c" "$log"
    result=$?
    only_kqueue
    case $result in
      0) outside_result "$id" passed; echo "ok   $id" ;;
      2) outside_result "$id" skipped "skipped by libevent's test itself"
         echo "SKIP $id" ;;
      *) why=$(case_why "$log")
         if [ "$rerun" -gt 0 ]; then
           k=$(rerun_on "$mode" "$c" kqueue)
           e=$(rerun_on "$mode" "$c" epoll)
           if [ "$e" = "$rerun" ]; then
             epoll_too+=("$id: $why (alone: failed $k of $rerun on kqueue, $e of $rerun on epoll)")
             echo "FAIL $id, on epoll too: $why"
             continue
           fi
           why="$why (alone: failed $k of $rerun on kqueue, $e of $rerun on epoll)"
         fi
         outside_result "$id" failed "$why"; echo "FAIL $id: $why" ;;
    esac
  done
  for c in $off; do
    id=$c; [ "$mode" = debug ] && id="debug:$c"
    outside_result "$id" skipped "off by default in libevent's suite (live network or fine timing)"
  done
done
rm -rf "$run_dir"

# The skips grouped by reason (libevent's off-by-default cases are many).
skips=("${outside_skips[@]}")
outside_skips=()
while IFS= read -r line; do
  [ -n "$line" ] && outside_skips+=("$line")
done < <(printf '%s\n' "${skips[@]}" | awk '{
    i = index($0, ": "); name = substr($0, 1, i - 1); why = substr($0, i + 2)
    if (!(why in n)) order[++k] = why
    n[why]++; names[why] = names[why] (n[why] <= 3 ? (n[why] > 1 ? ", " : "") name : (n[why] == 4 ? ", ..." : ""))
  } END { for (j = 1; j <= k; j++) printf "%d case(s): %s (%s)\n", n[order[j]], order[j], names[order[j]] }')
if [ ${#epoll_too[@]} -gt 0 ]; then
  echo
  echo "fails on epoll too, so not kqueued's (not counted): ${#epoll_too[@]}"
  for x in "${epoll_too[@]}"; do echo "  EPOLL-TOO $x"; done
fi
version=$(sed -n 's/^#define EVENT__VERSION "\(.*\)"$/\1/p' "$build/include/event2/event-config.h")
outside_summary "libevent ${version:-?} test programs and regress on its kqueue backend"
