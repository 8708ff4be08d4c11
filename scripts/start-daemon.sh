#!/usr/bin/env bash
# Sets up a Debian 12 machine (as root), builds kqueued, starts it serving
# /dev/kqueue (or $KQUEUE_DEVICE), and runs a short demo against it.
set -euo pipefail
cd "$(dirname "$0")/.."

device="${KQUEUE_DEVICE:-/dev/kqueue}"

bash scripts/setup-deps.sh
# An optimised build: this is the daemon people will use.
bazel build -c opt //daemon:kqueued //tools/demo:kqueue_demo
bin="$(bazel info -c opt bazel-bin 2>/dev/null)"

if [ -e /dev/cuse ]; then
  # CUSE nodes appear as 0600 root; this rule opens the device to everyone.
  install -m 0644 packaging/99-kqueued.rules /etc/udev/rules.d/99-kqueued.rules
  command -v udevadm >/dev/null && udevadm control --reload || true
fi

if pgrep -x kqueued >/dev/null; then
  echo "start-daemon: kqueued is already running (pkill -TERM kqueued to stop it)"
else
  install -m 0755 "${bin}/daemon/kqueued" /usr/local/sbin/kqueued
  # Without --foreground the daemon detaches once the device is ready.
  /usr/local/sbin/kqueued --device "${device}"
  echo "start-daemon: kqueued is serving ${device} (pkill -TERM kqueued to stop it)"
fi

KQUEUE_DEVICE="${device}" "${bin}/tools/demo/kqueue_demo"
