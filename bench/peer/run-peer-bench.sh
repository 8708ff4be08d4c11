#!/bin/bash
# Measures kqueued next to its peer libkqueue (kqueue emulated in-process on
# epoll) and next to epoll itself, in one run: the same benchmark source,
# bench/peer/peer_bench.c (BSD API only), compiled once against kqueued's
# <sys/event.h> and library and once against libkqueue's, each run pinned to
# CPU 0 (the daemon's threads too) and then unpinned. Prints the fast-path
# issue's figures (1-pipe harvest, 1000-pipe batch, wake-up round trip,
# EV_ADD+EV_DELETE) with each one's epoll figure from the same process and
# the ratio to it. A program that prints figures, not a test.
#
#   bench/peer/run-peer-bench.sh [--quick] [options] LIBKQUEUE_TREE
#
# LIBKQUEUE_TREE is a libkqueue source tree you fetched (e.g. tag v2.7.0 of
# https://github.com/mheily/libkqueue); it is built here with cmake
# (Release) in the scratch directory. Nothing is downloaded.
# kqueued is built (-c opt) and installed into a scratch prefix and served
# by a private daemon, as the outside suites do.
#
# Options: --quick (shorter samples), and those of tests/outside/lib.sh
# (--prefix DIR: use an installed kqueued; --work DIR; --keep).
set -u
quick=()
rest=()
for a in "$@"; do
  if [ "$a" = --quick ]; then quick=(--quick); else rest+=("$a"); fi
done
. "$(dirname "$0")/../../tests/outside/lib.sh"

outside_usage() { sed -n '2,/^set -u/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

outside_parse "${rest[@]+"${rest[@]}"}"
[ ${#outside_args[@]} -eq 1 ] || { outside_usage >&2; exit 2; }
tree=$(cd "${outside_args[0]}" && pwd) || outside_die "no such directory"
[ -f "$tree/CMakeLists.txt" ] && [ -f "$tree/include/sys/event.h" ] ||
  outside_die "$tree is not a libkqueue tree (no include/sys/event.h)"
src=$outside_repo/bench/peer/peer_bench.c
cc=${CC:-cc}

outside_install

echo "== building libkqueue from $tree"
mkdir -p "$outside_work/libkqueue-build"
(cd "$outside_work/libkqueue-build" &&
  cmake -DCMAKE_BUILD_TYPE=Release "$tree" && make -j"$(nproc)" kqueue) \
  > "$outside_work/libkqueue-build.log" 2>&1 || {
  tail -n 30 "$outside_work/libkqueue-build.log" >&2
  outside_die "libkqueue did not build (log: $outside_work/libkqueue-build.log)"
}
lkq=$outside_work/libkqueue-build

"$cc" -O2 -std=gnu11 -Wall -I"$outside_prefix/include" "$src" \
  -L"$outside_prefix/lib" -lkqueue -Wl,-rpath,"$outside_prefix/lib" -lpthread \
  -o "$outside_work/bench-kqueued" || outside_die "peer_bench does not build against kqueued"
"$cc" -O2 -std=gnu11 -Wall -I"$tree/include" "$src" \
  "$lkq/libkqueue.so" -Wl,-rpath,"$lkq" -lpthread \
  -o "$outside_work/bench-libkqueue" || outside_die "peer_bench does not build against libkqueue"

outside_start_daemon
all_cpus=0-$(($(nproc) - 1))

# run PLACEMENT NAME BINARY: one run; lines "placement<TAB>name<TAB>figure..."
run() {
  local placement=$1 name=$2 bin=$3 out
  if [ "$placement" = pinned ]; then
    taskset -a -c -p 0 "$outside_daemon_pid" > /dev/null
    out=$(taskset -c 0 "$bin" "${quick[@]+"${quick[@]}"}") || outside_die "$name ($placement) failed"
  else
    taskset -a -c -p "$all_cpus" "$outside_daemon_pid" > /dev/null
    out=$("$bin" "${quick[@]+"${quick[@]}"}") || outside_die "$name ($placement) failed"
  fi
  printf '%s\n' "$out" | sed "s/^/$placement\t$name\t/"
}

results=$outside_work/results.tsv
: > "$results"
for placement in pinned unpinned; do
  run "$placement" kqueued "$outside_work/bench-kqueued" >> "$results"
  run "$placement" libkqueue "$outside_work/bench-libkqueue" >> "$results"
done

echo
echo "kqueued $(git -C "$outside_repo" rev-parse --short HEAD 2>/dev/null), libkqueue $(git -C "$tree" describe --tags 2>/dev/null || echo "($tree)"), $(date -u '+%F %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
# Per figure: epoll (the kqueued run's; the libkqueue run's in brackets),
# each implementation, and its ratio to the epoll of its own run: time
# ratios for µs figures (higher is slower), rate ratios as 1/N (N times fewer).
awk -F'\t' '
  { key = $1 "\t" $3; unit[key] = $4; epoll[key, $2] = $5; kq[key, $2] = $6
    if (!(key in seen)) { seen[key] = 1; order[n++] = key } }
  function ratio(v, e, u) {
    if (e <= 0 || v <= 0) return "-"
    if (u ~ /^us/) return sprintf("%.1fx", v / e)
    return sprintf("1/%.1f", e / v)
  }
  END {
    printf "%-9s %-28s %-11s %-18s %-20s %-20s\n", "placement", "figure", "unit", "epoll", "kqueued (ratio)", "libkqueue (ratio)"
    for (i = 0; i < n; i++) {
      k = order[i]; split(k, part, "\t"); u = unit[k]
      printf "%-9s %-28s %-11s %-18s %-20s %-20s\n", part[1], part[2], u,
        sprintf("%s [%s]", epoll[k, "kqueued"], epoll[k, "libkqueue"]),
        sprintf("%s (%s)", kq[k, "kqueued"], ratio(kq[k, "kqueued"], epoll[k, "kqueued"], u)),
        sprintf("%s (%s)", kq[k, "libkqueue"], ratio(kq[k, "libkqueue"], epoll[k, "libkqueue"], u))
    }
  }' "$results"
