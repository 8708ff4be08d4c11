#!/bin/bash
# examples/go/kqueue_demo.go: vetted and built with Debian's Go toolchain
# (standard library only, offline), then run against a private daemon; the
# events it prints must be the pipe's READ and three timer expirations.
set -euo pipefail

. "${TEST_SRCDIR:?run under bazel test}/${TEST_WORKSPACE:-kqueued}/tests/support/shell_test_lib.sh"
test_init gotest

command -v go >/dev/null || fail "no go toolchain (apt-get install golang-go; scripts/setup-deps.sh does)"
# Go's build cache is content-addressed and safe to share: keeping it across
# runs saves compiling the standard library each time (~1 min here).
gocache=/tmp/kqueued-go-build-cache
mkdir -p "$gocache"
export HOME=$tmp GOCACHE=$gocache GOPATH=$tmp/gopath GOFLAGS= GOPROXY=off GO111MODULE=on
cp "$R/examples/go/kqueue_demo.go" "$tmp/"
(cd "$tmp" && go vet kqueue_demo.go && go build -o demo kqueue_demo.go) || fail "go build"
# Nothing but the standard library.
go list -f '{{join .Imports " "}}' "$tmp/kqueue_demo.go" | tr ' ' '\n' | while read -r pkg; do
  case $pkg in fmt|os|syscall|unsafe) ;; *) fail "imports $pkg" ;; esac
done

start_daemon "$R/daemon/kqueued" "$tmp/kqueue"

KQUEUE_DEVICE=$tmp/kqueue timeout 30 "$tmp/demo" > "$tmp/out" || {
  cat "$tmp/out" >&2
  fail "demo failed"
}
cat "$tmp/out"
grep -q '^device .*: kqueued .*, ABI [0-9]' "$tmp/out" || fail "no version line"
grep -Eq '^EVFILT_READ ident [0-9]+ bytes 5 eof false udata 0x7032$' "$tmp/out" || fail "no pipe event"
[ "$(grep -Ec '^EVFILT_TIMER ident 1 expirations [1-9][0-9]* udata 0x7431$' "$tmp/out")" -ge 3 ] ||
  fail "fewer than three timer events"
tail -n 1 "$tmp/out" | grep -qx done || fail "did not finish"
echo PASS
