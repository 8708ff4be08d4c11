#!/usr/bin/env bash
# Sets up a Debian 12 machine (as root), builds kqueued, starts it serving
# /dev/kqueue (or $KQUEUE_DEVICE) — through packaging/kqueued.service when
# systemd runs — installs kqstat and the manual pages, and runs a short demo.
set -euo pipefail
cd "$(dirname "$0")/.."

device="${KQUEUE_DEVICE:-/dev/kqueue}"

bash scripts/setup-deps.sh
# An optimised build: this is the daemon people will use.
bazel build -c opt //daemon:kqueued //tools/kqstat //tools/demo:kqueue_demo
bin="$(bazel info -c opt bazel-bin 2>/dev/null)"

if [ -e /dev/cuse ]; then
  # CUSE nodes appear as 0600 root; this rule opens the device to everyone.
  install -m 0644 packaging/99-kqueued.rules /etc/udev/rules.d/99-kqueued.rules
  command -v udevadm >/dev/null && udevadm control --reload || true
fi

# kqstat(1) beside the daemon; the manual pages where man finds them.
install -m 0755 "${bin}/tools/kqstat/kqstat" /usr/local/bin/kqstat
for page in docs/man/*.[128]; do
  install -D -m 0644 "${page}" "/usr/local/share/man/man${page##*.}/$(basename "${page}")"
done

# Under a running systemd (and for the standard device), the unit runs it:
# readiness, restart on failure and the journal come with it.
use_systemd=0
if [ -d /run/systemd/system ] && [ "${device}" = /dev/kqueue ] && command -v systemctl >/dev/null; then
  use_systemd=1
fi

# Already served when the device answers kqstat's ioctl (another kqueued
# process — a test's private daemon, say — serving some other path does not
# count).
if [ -e "${device}" ] && "${bin}/tools/kqstat/kqstat" --device "${device}" >/dev/null 2>&1; then
  echo "start-daemon: ${device} is already served by a kqueued"
elif [ "${use_systemd}" = 1 ]; then
  install -m 0755 "${bin}/daemon/kqueued" /usr/local/sbin/kqueued
  sed 's|/usr/sbin/kqueued|/usr/local/sbin/kqueued|' packaging/kqueued.service \
    > /etc/systemd/system/kqueued.service
  systemctl daemon-reload
  systemctl enable --now kqueued.service
  echo "start-daemon: kqueued.service is serving ${device}" \
    "(systemctl stop kqueued to stop it; journalctl -u kqueued for its log)"
else
  install -m 0755 "${bin}/daemon/kqueued" /usr/local/sbin/kqueued
  # Without --foreground the daemon detaches once the device is ready, and
  # logs to syslog.
  /usr/local/sbin/kqueued --device "${device}"
  pid=$(pgrep -xf "/usr/local/sbin/kqueued --device ${device}" | head -1)
  echo "start-daemon: kqueued (pid ${pid}) is serving ${device} (kill -TERM ${pid} to stop it)"
fi

KQUEUE_DEVICE="${device}" "${bin}/tools/demo/kqueue_demo"
echo "start-daemon: 'kqstat' shows what the daemon holds (kqstat(1), kqueued(8))"
