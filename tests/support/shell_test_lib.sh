# Sourced by the project's bash tests (sh_test): the runfiles root, a scratch
# directory, a private daemon and their clean-up.
#
#   . "$TEST_SRCDIR/${TEST_WORKSPACE:-kqueued}/tests/support/shell_test_lib.sh"
#   test_init NAME            # R, tmp (/tmp/kqueued-NAME.XXXXXX), fail, the trap
#   start_daemon BIN DEVICE   # BIN serves DEVICE over FUSE; daemon_pid
#
# The scratch directory is under /tmp, not $TEST_TMPDIR: the daemon mounts a
# file there and Bazel's sandbox paths are too long for some tools.

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

test_init() {
  R=${TEST_SRCDIR:?run under bazel test}/${TEST_WORKSPACE:-kqueued}
  tmp=$(mktemp -d "/tmp/kqueued-$1.XXXXXX")
  chmod 0755 "$tmp"
  daemon_pid=
  trap _test_cleanup EXIT
}

_test_cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}

# Starts `$1 --foreground --transport fuse --device $2` (its stderr in
# $tmp/daemon.log) and waits up to 10 s for the device to be mounted.
start_daemon() {
  "$1" --foreground --transport fuse --device "$2" 2> "$tmp/daemon.log" &
  daemon_pid=$!
  for _ in $(seq 200); do
    mountpoint -q "$2" && return 0
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.05
  done
  fail "the daemon did not come up: $(cat "$tmp/daemon.log")"
}
