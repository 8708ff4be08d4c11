#!/bin/sh
# Builds the Debian package of kqueued with dpkg-deb, offline:
#
#   /usr/sbin/kqueued                 the daemon          (optimised, stripped)
#   /usr/bin/kqstat                   kqstat(1)
#   /usr/lib/libkqueue.so.1, .so, .a  the client library
#   /usr/lib/pkgconfig/kqueue.pc      pkg-config
#   /usr/include/sys/event.h, kqueue/kqueue.hpp, kqueued/kqueue_abi.h
#   /usr/share/man/...                kqueue.2 kevent.2 kqueued.8 kqstat.1
#   /lib/systemd/system/kqueued.service
#   /lib/udev/rules.d/99-kqueued.rules
#   /usr/share/doc/kqueued/           README, ABI and filter documentation
#
# Usage: packaging/build-deb.sh [--out DIR] [--bin DIR] [--src DIR] [--version V]
#   --out DIR      where the .deb goes (default: the current directory)
#   --bin DIR      a Bazel output tree holding daemon/kqueued,
#                  tools/kqstat/kqstat, client/libkqueue.so and .a built
#                  with -c opt (default: build them now with
#                  `bazel build -c opt` and use that tree)
#   --src DIR      the source tree (default: this script's checkout)
#   --version V    package version (default: the daemon's)
# Prints the path of the package.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
out=$(pwd)
bin=
version=

die() {
  echo "build-deb.sh: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case $1 in
    --out) [ $# -ge 2 ] || die "--out needs a value"; out=$2; shift 2 ;;
    --bin) [ $# -ge 2 ] || die "--bin needs a value"; bin=$2; shift 2 ;;
    --src) [ $# -ge 2 ] || die "--src needs a value"; src=$2; shift 2 ;;
    --version) [ $# -ge 2 ] || die "--version needs a value"; version=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done

for tool in dpkg-deb dpkg gzip strip; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
done

if [ -z "$bin" ]; then
  (cd "$src" && bazel build -c opt //daemon:kqueued //tools/kqstat //client:all) >&2
  bin=$(cd "$src" && bazel info -c opt bazel-bin 2>/dev/null)
fi
if [ -z "$version" ]; then
  version=$(sed -n 's/.*"kqueued \([0-9][0-9.]*\)".*/\1/p' "$src/daemon/service/version.h" | head -n 1)
fi
[ -n "$version" ] || die "no version (pass --version)"
arch=$(dpkg --print-architecture)

stage=$(mktemp -d "${TMPDIR:-/tmp}/kqueued-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root

# Files: install.sh lays out the prefix; the rest is the package's own.
sh "$src/client/install.sh" --prefix /usr --destdir "$root" --bin "$bin" --src "$src" \
  --version "$version" >&2
strip --strip-unneeded "$root/usr/sbin/kqueued" "$root/usr/bin/kqstat" \
  "$root/usr/lib/libkqueue.so.1"
strip --strip-debug "$root/usr/lib/libkqueue.a"
gzip -9n "$root"/usr/share/man/man*/*
install -D -m 0644 "$src/packaging/kqueued.service" "$root/lib/systemd/system/kqueued.service"
install -D -m 0644 "$src/packaging/99-kqueued.rules" "$root/lib/udev/rules.d/99-kqueued.rules"
doc=$root/usr/share/doc/kqueued
install -d "$doc"
install -m 0644 "$src/README.md" "$src/docs/abi.md" "$src/docs/filters.md" "$doc/"
cat > "$doc/copyright" <<COPYRIGHT
kqueued: BSD kqueue/kevent for Linux, served as a device.
Written for the kqueued project; NetBSD's kern_event.c was a reference for
the semantics, none of its text is included.
COPYRIGHT
chmod 0644 "$doc/copyright"

# Control files.
install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: kqueued
Version: $version
Architecture: $arch
Maintainer: kqueued developers <kqueued@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34), libfuse3-3, libstdc++6, libgcc-s1
Suggests: fuse3
Section: admin
Priority: optional
Description: BSD kqueue/kevent for Linux, served as the device /dev/kqueue
 kqueued is a small privileged daemon that serves BSD's kqueue(2) and
 kevent(2) to every process through the device /dev/kqueue (CUSE, or a FUSE
 file where the kernel has no CUSE). The package holds the daemon and its
 systemd unit and udev rule, kqstat(1) to see what the daemon holds, and the
 client library (<sys/event.h>, libkqueue.so/.a, pkg-config "kqueue").
CONTROL
for script in postinst prerm postrm; do
  install -m 0755 "$src/packaging/debian/$script" "$root/DEBIAN/$script"
done
# libkqueue.so.1 lands in /usr/lib: refresh the linker cache.
echo "activate-noawait ldconfig" > "$root/DEBIAN/triggers"
chmod 0644 "$root/DEBIAN/triggers"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
  xargs md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/kqueued_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
