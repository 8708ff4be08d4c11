#!/bin/sh
# Installs the client library, headers and daemon into a temporary prefix
# with client/install.sh, builds C and C++ programs against the result with
# pkg-config (shared and static), and runs them against the installed daemon.
set -eu

R=$TEST_SRCDIR/${TEST_WORKSPACE:-kqueued}
tmp=$(mktemp -d "${TEST_TMPDIR:-/tmp}/install.XXXXXX")
prefix=$tmp/prefix
daemon_pid=

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

echo "== install"
"$R/client/install.sh" --prefix "$prefix" --bin "$R" --src "$R" --version 9.9.9

for f in sbin/kqueued lib/libkqueue.so.1 lib/libkqueue.so lib/libkqueue.a \
  lib/pkgconfig/kqueue.pc include/sys/event.h include/kqueue/kqueue.hpp \
  include/kqueued/kqueue_abi.h; do
  [ -e "$prefix/$f" ] || fail "$f was not installed"
done
[ -x "$prefix/sbin/kqueued" ] || fail "kqueued is not executable"
[ "$(readlink "$prefix/lib/libkqueue.so")" = libkqueue.so.1 ] || fail "libkqueue.so link"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion kqueue)" = 9.9.9 ] || fail "pkg-config --modversion"
cflags=$(pkg-config --cflags kqueue)
libs=$(pkg-config --libs kqueue)
echo "cflags: $cflags"
echo "libs: $libs"
case $cflags in *"-I$prefix/include"*) ;; *) fail "cflags lack -I$prefix/include" ;; esac

echo "== compile"
cat > "$tmp/prog.c" <<'PROG'
/* Only the installed <sys/event.h>: kqueue1, KFILTER_BYNAME, a timer. */
#include <sys/types.h>
#include <sys/event.h>
#include <sys/ioctl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
  struct kfilter_mapping km;
  struct kevent ev;
  struct timespec zero = {0, 0}, two = {2, 0};
  int kq = kqueue1(O_CLOEXEC);
  if (kq < 0) {
    printf("kqueue1: %s\n", strerror(errno));
    return errno == ENOSYS ? 3 : 1; /* 3: daemon not up yet */
  }
  memset(&km, 0, sizeof km);
  km.name = (char *)"EVFILT_TIMER";
  if (ioctl(kq, KFILTER_BYNAME, &km) != 0 || km.filter != EVFILT_TIMER) {
    printf("KFILTER_BYNAME: %s\n", strerror(errno));
    return 1;
  }
  if (kevent(kq, NULL, 0, &ev, 1, &zero) != 0) {
    printf("kevent poll: %s\n", strerror(errno));
    return 1;
  }
  EV_SET(&ev, 1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 10, 0);
  if (kevent(kq, &ev, 1, NULL, 0, NULL) != 0) {
    printf("timer not available (%s); poll only\n", strerror(errno));
  } else if (kevent(kq, NULL, 0, &ev, 1, &two) != 1 || ev.filter != EVFILT_TIMER) {
    printf("timer did not fire\n");
    return 1;
  }
  close(kq);
  printf("ok\n");
  return 0;
}
PROG
cat > "$tmp/prog.cc" <<'PROG'
#include <kqueue/kqueue.hpp>
#include <cstdio>
#include <system_error>

int main() {
  try {
    kq::Queue q = kq::Queue::Open();
    if (kq::FilterName(q, EVFILT_USER) != "EVFILT_USER") return 1;
    struct kevent out[1];
    if (q.kevent({}, out, std::chrono::milliseconds(0)) != 0) return 1;
  } catch (const std::system_error& e) {
    std::printf("%s\n", e.what());
    return e.code() == std::errc::function_not_supported ? 3 : 1;
  }
  std::printf("ok\n");
  return 0;
}
PROG
# Under `bazel test --config=asan` the installed library is instrumented:
# the programs that link it must be too.
san=
if nm "$prefix/lib/libkqueue.a" 2>/dev/null | grep -q __asan_init; then
  san="-fsanitize=address,undefined"
fi
# shellcheck disable=SC2086 # word splitting of pkg-config output is intended
cc $san -Wall -Werror -o "$tmp/prog_shared" "$tmp/prog.c" $cflags $libs
# shellcheck disable=SC2086
cc $san -Wall -Werror -o "$tmp/prog_static" "$tmp/prog.c" $cflags "$prefix/lib/libkqueue.a"
# shellcheck disable=SC2086
c++ $san -std=c++17 -Wall -Werror -o "$tmp/prog_cxx" "$tmp/prog.cc" $cflags $libs

export LD_LIBRARY_PATH="$prefix/lib"
if command -v ldd >/dev/null; then
  ldd "$tmp/prog_shared" | grep -q "libkqueue.so.1 => $prefix/lib/libkqueue.so.1" ||
    fail "prog_shared does not load the installed libkqueue.so.1"
fi
if nm "$tmp/prog_static" 2>/dev/null | grep -q ' T kevent$'; then :; else
  command -v nm >/dev/null && fail "prog_static does not contain kevent"
fi

echo "== run against the installed daemon"
export KQUEUE_DEVICE="$tmp/kqueue"
"$prefix/sbin/kqueued" --device "$KQUEUE_DEVICE" --transport fuse --foreground &
daemon_pid=$!

# Exit status 3 means "no daemon yet": retry for up to 10 s.
run() {
  i=0
  while :; do
    set +e
    out=$("$@" 2>&1)
    rc=$?
    set -e
    [ "$rc" -ne 3 ] && break
    i=$((i + 1))
    [ $i -lt 200 ] || fail "$1: the daemon did not come up: $out"
    kill -0 "$daemon_pid" 2>/dev/null || fail "kqueued exited"
    sleep 0.05
  done
  echo "$1: $out"
  [ "$rc" -eq 0 ] || fail "$1 exited with $rc"
}
run "$tmp/prog_shared"
run "$tmp/prog_static"
run "$tmp/prog_cxx"
echo "PASS"
