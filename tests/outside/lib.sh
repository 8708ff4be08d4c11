# Shared by tests/outside/run-*.sh (sourced, not run). Builds and installs
# the project into a scratch prefix, starts a private daemon on a private
# path, and keeps the per-suite tally. Nothing here downloads anything.
#
# Options every run-*.sh accepts (before the source-tree path):
#   --prefix DIR   use the project already installed in DIR (client/install.sh)
#                  instead of building and installing into a scratch prefix
#   --work DIR     scratch directory (default: a fresh /tmp/kqueued-outside-*)
#   --keep         keep the scratch directory (logs, binaries) afterwards
#   --timeout SEC  per-test-case time limit (default depends on the suite)

outside_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
outside_repo=$(cd "$outside_here/../.." && pwd)
outside_prefix=
outside_work=
outside_keep=0
outside_timeout=
outside_daemon_pid=
outside_daemon_dir=
outside_passed=0
outside_failed=0
outside_skipped=0
outside_failures=()
outside_skips=()

outside_die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# Parses the common options; the rest is left in outside_args.
outside_parse() {
  outside_args=()
  while [ $# -gt 0 ]; do
    case $1 in
      --prefix) [ $# -ge 2 ] || outside_die "--prefix needs a value"; outside_prefix=$2; shift 2 ;;
      --work) [ $# -ge 2 ] || outside_die "--work needs a value"; outside_work=$2; shift 2 ;;
      --keep) outside_keep=1; shift ;;
      --timeout) [ $# -ge 2 ] || outside_die "--timeout needs a value"; outside_timeout=$2; shift 2 ;;
      -h|--help) outside_usage; exit 0 ;;
      --) shift; outside_args+=("$@"); break ;;
      -*) outside_die "unknown option $1 (see --help)" ;;
      *) outside_args+=("$1"); shift ;;
    esac
  done
  if [ -z "$outside_work" ]; then
    outside_work=$(mktemp -d /tmp/kqueued-outside-XXXXXX)
  else
    mkdir -p "$outside_work"
  fi
  outside_work=$(cd "$outside_work" && pwd)
  trap outside_finish EXIT
  trap 'exit 130' INT TERM
}

outside_finish() {
  outside_stop_daemon
  if [ "$outside_keep" = 1 ]; then
    echo "scratch directory kept: $outside_work"
  else
    rm -rf "$outside_work"
  fi
}

# Builds (optimised) and installs into $outside_work/prefix, unless --prefix.
outside_install() {
  if [ -n "$outside_prefix" ]; then
    [ -x "$outside_prefix/sbin/kqueued" ] || outside_die "$outside_prefix/sbin/kqueued is missing"
    return
  fi
  outside_prefix=$outside_work/prefix
  echo "== building (bazel build -c opt) and installing kqueued from $outside_repo"
  # install.sh builds the optimised daemon and libraries itself.
  "$outside_repo/client/install.sh" --prefix "$outside_prefix" --src "$outside_repo" \
    > "$outside_work/build.log" 2>&1 || {
    tail -n 30 "$outside_work/build.log" >&2
    outside_die "the build or install.sh failed (log: $outside_work/build.log)"
  }
  echo "== installed into $outside_prefix"
}

# True once the device at $1 answers the library's version handshake.
outside_device_ready() {
  KQUEUE_DEVICE=$1 PYTHONPATH="$outside_repo/client/python" python3 -c '
import sys, kqueued
try:
    kqueued.kqueue().close()
except OSError:
    sys.exit(1)' 2>/dev/null
}

# Starts a private daemon; exports KQUEUE_DEVICE.
outside_start_daemon() {
  outside_daemon_dir=$(mktemp -d /tmp/kqueued-outside-dev-XXXXXX)
  chmod 755 "$outside_daemon_dir"
  local device=$outside_daemon_dir/kqueue
  "$outside_prefix/sbin/kqueued" --device "$device" --transport fuse --foreground \
    < /dev/null > "$outside_work/kqueued.log" 2>&1 &
  outside_daemon_pid=$!
  local tries=0
  until outside_device_ready "$device"; do
    if ! kill -0 "$outside_daemon_pid" 2>/dev/null; then
      cat "$outside_work/kqueued.log" >&2
      outside_daemon_pid=
      outside_die "kqueued exited during start-up"
    fi
    tries=$((tries + 1))
    [ $tries -lt 500 ] || outside_die "kqueued did not become ready within 10 s"
    sleep 0.02
  done
  export KQUEUE_DEVICE=$device
  echo "== private daemon (pid $outside_daemon_pid) serving $device"
}

outside_stop_daemon() {
  if [ -n "$outside_daemon_pid" ]; then
    kill -TERM "$outside_daemon_pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
      kill -0 "$outside_daemon_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$outside_daemon_pid" 2>/dev/null || true
    wait "$outside_daemon_pid" 2>/dev/null || true
    outside_daemon_pid=
  fi
  if [ -n "$outside_daemon_dir" ]; then
    rm -f "$outside_daemon_dir/kqueue" 2>/dev/null || true
    rmdir "$outside_daemon_dir" 2>/dev/null || true
    outside_daemon_dir=
  fi
}

# True while the private daemon is alive (a crash is a finding of its own).
outside_daemon_alive() {
  [ -n "$outside_daemon_pid" ] && kill -0 "$outside_daemon_pid" 2>/dev/null
}

# outside_result NAME passed|failed|skipped [REASON]
outside_result() {
  case $2 in
    passed) outside_passed=$((outside_passed + 1)) ;;
    failed) outside_failed=$((outside_failed + 1)); outside_failures+=("$1: ${3:-}") ;;
    skipped) outside_skipped=$((outside_skipped + 1)); outside_skips+=("$1: ${3:-}") ;;
    *) outside_die "bad result '$2' for $1" ;;
  esac
}

# Prints the tally; returns 1 if anything failed.
outside_summary() {
  local suite=$1
  echo
  echo "== $suite: passed $outside_passed, failed $outside_failed, skipped $outside_skipped"
  local x
  if [ ${#outside_failures[@]} -gt 0 ]; then
    echo "failures:"
    for x in "${outside_failures[@]}"; do echo "  FAIL $x"; done
  fi
  if [ ${#outside_skips[@]} -gt 0 ]; then
    echo "skipped:"
    for x in "${outside_skips[@]}"; do echo "  SKIP $x"; done
  fi
  outside_daemon_alive || echo "WARNING: the private daemon is no longer running (see $outside_work/kqueued.log; --keep keeps it)"
  [ "$outside_failed" = 0 ]
}
