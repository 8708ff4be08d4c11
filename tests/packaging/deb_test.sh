#!/bin/bash
# The Debian package: packaging/build-deb.sh on the -c opt binaries
# (//packaging:release_binaries), then
#   - its file list, control fields and maintainer scripts;
#   - the unit passes `systemd-analyze verify`, the man pages render without
#     warnings;
#   - it installs into a scratch root with dpkg --root (the maintainer
#     scripts see $DPKG_ROOT and leave the running system alone), and is
#     removed and purged again;
#   - a program built with the installed header, pkg-config file and library
#     (shared and static) runs against the installed daemon, and the
#     installed kqstat sees it;
#   - the maintainer scripts do nothing harmful without udev and systemd,
#     and reload udev when it is there.
set -euo pipefail

. "${TEST_SRCDIR:?run under bazel test}/${TEST_WORKSPACE:-kqueued}/tests/support/shell_test_lib.sh"
test_init debtest

echo "== build the package (${SECONDS}s)"
deb=$(bash "$R/packaging/build-deb.sh" --bin "$R" --src "$R" --out "$tmp/out" --version 9.9.9)
[ -f "$deb" ] || fail "no package at '$deb'"
[ "$(basename "$deb")" = "kqueued_9.9.9_$(dpkg --print-architecture).deb" ] || fail "name $deb"

echo "== contents (${SECONDS}s)"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./||; s|/$||' | grep -v '^$' | sort > "$tmp/files"
expected="lib/systemd/system/kqueued.service
lib/udev/rules.d/99-kqueued.rules
usr/bin/kqstat
usr/include/kqueue/kqueue.hpp
usr/include/kqueued/kqueue_abi.h
usr/include/sys/event.h
usr/lib/libkqueue.a
usr/lib/libkqueue.so
usr/lib/libkqueue.so.1
usr/lib/pkgconfig/kqueue.pc
usr/sbin/kqueued
usr/share/doc/kqueued/README.md
usr/share/doc/kqueued/abi.md
usr/share/doc/kqueued/copyright
usr/share/doc/kqueued/filters.md
usr/share/man/man1/kqstat.1.gz
usr/share/man/man2/kevent.2.gz
usr/share/man/man2/kqueue.2.gz
usr/share/man/man8/kqueued.8.gz"
for f in $expected; do
  grep -qx "$f" "$tmp/files" || fail "$f is not in the package"
done
# Nothing else but directories.
dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./||' | sort > "$tmp/nondirs"
[ "$(cat "$tmp/nondirs")" = "$(echo "$expected" | sort)" ] || {
  diff <(echo "$expected" | sort) "$tmp/nondirs" >&2 || true
  fail "unexpected files in the package"
}
dpkg-deb -c "$deb" | awk '{print $2}' | sort -u | grep -qvx 'root/root' && fail "files not owned by root"
[ "$(dpkg-deb -f "$deb" Package)" = kqueued ] || fail "Package"
[ "$(dpkg-deb -f "$deb" Version)" = 9.9.9 ] || fail "Version"
dpkg-deb -f "$deb" Depends | grep -q libfuse3-3 || fail "Depends lacks libfuse3-3"
mkdir "$tmp/control"
dpkg-deb -e "$deb" "$tmp/control"
for s in postinst prerm postrm; do
  [ -x "$tmp/control/$s" ] || fail "$s missing or not executable"
  sh -n "$tmp/control/$s" || fail "$s: syntax"
done
(cd "$tmp" && mkdir x && dpkg-deb -x "$deb" x && cd x && md5sum --quiet -c ../control/md5sums) ||
  fail "md5sums"
file_of() { echo "$tmp/x/$1"; }
# Stripped, optimised binaries (the -c opt build, see //packaging:release_binaries).
for b in usr/sbin/kqueued usr/bin/kqstat usr/lib/libkqueue.so.1; do
  readelf -S "$(file_of $b)" | grep -q '\.symtab' && fail "$b is not stripped"
done
readelf -d "$(file_of usr/lib/libkqueue.so.1)" | grep -q 'SONAME.*libkqueue.so.1' || fail "soname"

echo "== the unit and the man pages (${SECONDS}s)"
unit=$(file_of lib/systemd/system/kqueued.service)
grep -qx 'Type=notify' "$unit" || fail "unit: Type=notify"
grep -qx 'Restart=on-failure' "$unit" || fail "unit: Restart"
grep -qx 'ExecStart=/usr/sbin/kqueued --foreground --device /dev/kqueue' "$unit" || fail "ExecStart"
# verify resolves ExecStart and the man: links inside the extracted root,
# which borrows the host's units for the targets the unit depends on.
cp -rn /lib/systemd/system/. "$tmp/x/lib/systemd/system/"
out=$(MANPATH="$tmp/x/usr/share/man" systemd-analyze verify --root="$tmp/x" "$unit" 2>&1) ||
  fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
for page in usr/share/man/man1/kqstat.1.gz usr/share/man/man2/kqueue.2.gz \
  usr/share/man/man2/kevent.2.gz usr/share/man/man8/kqueued.8.gz; do
  warnings=$(MANWIDTH=80 man --warnings -l "$(file_of $page)" 2>&1 >/dev/null)
  [ -z "$warnings" ] || fail "$page: $warnings"
  lines=$(MANWIDTH=80 man -l "$(file_of $page)" 2>/dev/null | wc -l)
  [ "$lines" -gt 20 ] || fail "$page renders to $lines lines"
done

echo "== install into a scratch root (${SECONDS}s)"
root=$tmp/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
# Stubs that record calls: the scripts must not touch the running system.
mkdir "$tmp/stubs"
for tool in udevadm systemctl; do
  printf '#!/bin/sh\necho "%s $*" >> %s/calls\n' "$tool" "$tmp" > "$tmp/stubs/$tool"
  chmod +x "$tmp/stubs/$tool"
done
PATH="$tmp/stubs:$PATH" dpkg --root="$root" --force-depends --force-script-chrootless \
  --log=/dev/null -i "$deb" > "$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i"; }
status=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}' kqueued)
[ "$status" = "install ok installed" ] || fail "status: $status"
[ ! -e "$tmp/calls" ] || fail "maintainer scripts acted on the running system: $(cat "$tmp/calls")"
for f in $expected; do
  [ -e "$root/$f" ] || fail "$f not installed"
done

echo "== build against the installed header and library (${SECONDS}s)"
cat > "$tmp/prog.c" <<'PROG'
#include <stdio.h>
#include <sys/event.h>
#include <unistd.h>
int main(void) {
  int kq = kqueue();
  if (kq < 0) { perror("kqueue"); return 1; }
  struct kevent ev;
  EV_SET(&ev, 1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 10, 0);
  struct kevent out;
  int n = kevent(kq, &ev, 1, &out, 1, NULL);
  if (n != 1 || out.ident != 1 || out.filter != EVFILT_TIMER) { perror("kevent"); return 1; }
  printf("timer fired\n");
  fflush(stdout);
  getchar();  /* hold the kqueue until told */
  return 0;
}
PROG
export PKG_CONFIG_LIBDIR="$root/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$root"
[ "$(pkg-config --modversion kqueue)" = 9.9.9 ] || fail "pkg-config --modversion"
# shellcheck disable=SC2046
cc -Wall -Werror -o "$tmp/prog" "$tmp/prog.c" $(pkg-config --cflags --libs kqueue) ||
  fail "cc (shared)"
# shellcheck disable=SC2046
cc -Wall -Werror -o "$tmp/prog_static" "$tmp/prog.c" $(pkg-config --cflags kqueue) \
  "$root/usr/lib/libkqueue.a" || fail "cc (static)"
readelf -d "$tmp/prog" | grep -q 'NEEDED.*libkqueue.so.1' || fail "prog does not use libkqueue.so.1"
readelf -d "$tmp/prog_static" | grep -q libkqueue && fail "prog_static uses the shared library"

dev=$tmp/dev
mkdir -m 0755 "$dev"
start_daemon "$root/usr/sbin/kqueued" "$dev/kqueue"
export KQUEUE_DEVICE=$dev/kqueue
coproc PROG { LD_LIBRARY_PATH="$root/usr/lib" exec "$tmp/prog"; }
# bash unsets PROG_PID as soon as it reaps the coprocess, which can happen
# between the echo below and the wait: keep the pid.
prog_pid=$PROG_PID
read -r -t 10 line <&"${PROG[0]}" || fail "prog said nothing"
[ "$line" = "timer fired" ] || fail "prog: $line"
"$root/usr/bin/kqstat" --json -p "$prog_pid" > "$tmp/stat.json"
python3 - "$tmp/stat.json" "$prog_pid" <<'PY' || fail "kqstat does not show the program: $(cat "$tmp/stat.json")"
import json, sys
doc = json.load(open(sys.argv[1]))
procs = doc["processes"]
assert [p["pid"] for p in procs] == [int(sys.argv[2])], procs
assert len(procs[0]["kqueues"]) == 1, procs
PY
echo >&"${PROG[1]}"
wait "$prog_pid" || fail "prog failed"
"$tmp/prog_static" < /dev/null | grep -qx "timer fired" || fail "prog_static"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || fail "the installed daemon did not stop cleanly: $(cat "$tmp/daemon.log")"
daemon_pid=

echo "== maintainer scripts without udev and systemd (${SECONDS}s)"
info=$root/var/lib/dpkg/info
for args in "postinst configure" "postinst configure 9.9.8" "prerm remove" "postrm remove" \
  "postrm purge"; do
  set -- $args
  env -i PATH=/nonexistent /bin/sh "$info/kqueued.$1" "${@:2}" || fail "$args without tools"
done
echo "== maintainer scripts with udev (${SECONDS}s)"
rm -f "$tmp/calls"
env -i PATH="$tmp/stubs:/usr/bin:/bin" /bin/sh "$info/kqueued.postinst" configure ||
  fail "postinst with stubs"
grep -qx 'udevadm control --reload-rules' "$tmp/calls" || fail "udev was not reloaded"
if [ ! -d /run/systemd/system ]; then
  grep -q systemctl "$tmp/calls" && fail "systemctl called without a running systemd"
fi

echo "== remove and purge (${SECONDS}s)"
dpkg --root="$root" --force-script-chrootless --log=/dev/null -r kqueued > "$tmp/dpkg.log" 2>&1 ||
  { cat "$tmp/dpkg.log" >&2; fail "dpkg -r"; }
[ ! -e "$root/usr/sbin/kqueued" ] || fail "daemon left after removal"
dpkg --root="$root" --force-script-chrootless --log=/dev/null -P kqueued > "$tmp/dpkg.log" 2>&1 ||
  { cat "$tmp/dpkg.log" >&2; fail "dpkg -P"; }

echo "PASS"
