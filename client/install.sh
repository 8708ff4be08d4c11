#!/bin/sh
# Installs kqueued, the client library and its headers:
#
#   PREFIX/sbin/kqueued                    the daemon
#   PREFIX/bin/kqstat                      what the daemon holds (kqstat(1))
#   PREFIX/lib/libkqueue.so.1 (+ .so link) the shared library
#   PREFIX/lib/libkqueue.a                 the static library
#   PREFIX/lib/pkgconfig/kqueue.pc         pkg-config metadata
#   PREFIX/include/sys/event.h             the BSD header
#   PREFIX/include/kqueue/kqueue.hpp       the C++ layer
#   PREFIX/include/kqueued/kqueue_abi.h    the device ABI (sys/event.h includes it)
#   PREFIX/share/man/man{1,2,8}/...        kqstat.1, kqueue.2, kevent.2, kqueued.8
#
#   client/install.sh --prefix /usr/local
#
# builds the optimised daemon and libraries first
# (bazel build -c opt //daemon:kqueued //tools/kqstat //client:all) and installs those: a
# plain `bazel build` makes an unoptimised (-O0) daemon, several times slower.
#
# Options:
#   --prefix DIR    where to install (default /usr/local)
#   --destdir DIR   stage under DIR (paths inside kqueue.pc stay PREFIX-based),
#                   as packagers expect
#   --bin DIR       install what this Bazel output tree holds, without building
#                   (packagers who built themselves; mind the -c opt)
#   --no-build      install what the workspace's bazel-bin holds, without
#                   building
#   --src DIR       the source tree (default: this script's workspace)
#   --version V     the version written to kqueue.pc (default: the daemon's)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
prefix=/usr/local
destdir=
bin=
build=1
version=

die() {
  echo "install.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit "$1"
}

while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || die "--destdir needs a value"; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --bin) [ $# -ge 2 ] || die "--bin needs a value"; bin=$2; shift 2 ;;
    --bin=*) bin=${1#*=}; shift ;;
    --no-build) build=0; shift ;;
    --src) [ $# -ge 2 ] || die "--src needs a value"; src=$2; shift 2 ;;
    --src=*) src=${1#*=}; shift ;;
    --version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift 2 ;;
    --version=*) version=${1#*=}; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage 2 >&2 ;;
  esac
done

case $prefix in
  /*) ;;
  *) die "--prefix must be an absolute path (it is written into kqueue.pc)" ;;
esac
if [ -z "$bin" ]; then
  if [ "$build" = 1 ]; then
    command -v bazel >/dev/null 2>&1 || die "bazel is not installed (or pass --bin DIR / --no-build)"
    (cd "$src" && bazel build -c opt //daemon:kqueued //tools/kqstat //client:all) ||
      die "the optimised build failed"
    bin=$(cd "$src" && bazel info -c opt bazel-bin) || die "bazel info failed"
  else
    bin=$src/bazel-bin
  fi
fi

daemon=$bin/daemon/kqueued
kqstat=$bin/tools/kqstat/kqstat
shared=$bin/client/libkqueue.so
static=$bin/client/libkqueue.a
for f in "$daemon" "$kqstat" "$shared" "$static"; do
  [ -f "$f" ] || die "$f is missing: run 'bazel build -c opt //daemon:kqueued //tools/kqstat //client:all' first (or drop --no-build/--bin)"
done
event_h=$src/client/include/sys/event.h
kqueue_hpp=$src/client/include/kqueue/kqueue.hpp
abi_h=$src/proto/kqueue_abi.h
pc_in=$src/client/kqueue.pc.in
man_pages="$src/docs/man/kqstat.1 $src/docs/man/kqueue.2 $src/docs/man/kevent.2 $src/docs/man/kqueued.8"
for f in "$event_h" "$kqueue_hpp" "$abi_h" "$pc_in" $man_pages; do
  [ -f "$f" ] || die "$f is missing (pass --src)"
done

# The daemon's version string is "kqueued X.Y.Z" in daemon/service/version.h.
if [ -z "$version" ] && [ -f "$src/daemon/service/version.h" ]; then
  version=$(sed -n 's/.*"kqueued \([0-9][0-9.]*\)".*/\1/p' "$src/daemon/service/version.h" | head -n 1)
fi
[ -n "$version" ] || version=0

root=$destdir$prefix

mkdir -p "$root/sbin" "$root/bin" "$root/lib/pkgconfig" "$root/include/sys" \
  "$root/include/kqueue" "$root/include/kqueued" "$root/share/man/man1" \
  "$root/share/man/man2" "$root/share/man/man8"

install -m 0755 "$daemon" "$root/sbin/kqueued"
install -m 0755 "$kqstat" "$root/bin/kqstat"
for page in $man_pages; do
  section=${page##*.}
  install -m 0644 "$page" "$root/share/man/man$section/$(basename "$page")"
done
# The soname is libkqueue.so.1; programs link against the unversioned name.
install -m 0755 "$shared" "$root/lib/libkqueue.so.1"
ln -sf libkqueue.so.1 "$root/lib/libkqueue.so"
install -m 0644 "$static" "$root/lib/libkqueue.a"
install -m 0644 "$event_h" "$root/include/sys/event.h"
install -m 0644 "$kqueue_hpp" "$root/include/kqueue/kqueue.hpp"
install -m 0644 "$abi_h" "$root/include/kqueued/kqueue_abi.h"

# '|' as the sed delimiter: paths contain '/'. Refuse the rare path with '|'.
case $prefix in *'|'*) die "--prefix must not contain '|'" ;; esac
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" "$pc_in" > "$root/lib/pkgconfig/kqueue.pc"
chmod 0644 "$root/lib/pkgconfig/kqueue.pc"

echo "installed kqueued $version into $root"
