#!/usr/bin/env bash
# End-to-end check of the VM tier itself, without kqueued: compiles two tiny
# static programs (tests/vm/smoke/) and boots them with run-vm.sh. Proves that
# the kernel cache, the initramfs, module loading (/dev/fuse, /dev/cuse), the
# daemon start, the wait for and chmod of the device node, the test run, the
# result marker and the tally all work on this machine.
#
# Usage: tests/vm/smoke.sh [extra run-vm.sh options, e.g. --test-user nobody]
# Needs: gcc with static glibc (libc6-dev), plus what run-vm.sh needs. Fetches
# the kernel first if the cache is empty (network needed only that time).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/kqueued-vm-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT

"$here/fetch-kernel.sh"

# Plain gcc, not Bazel: the smoke must not depend on the build being healthy.
cc="${CC:-gcc}"
"$cc" -static -O2 -Wall -Wextra -o "$work/sleep_daemon" "$here/smoke/sleep_daemon.c"
"$cc" -static -O2 -Wall -Wextra -o "$work/cuse_smoke" "$here/smoke/cuse_smoke.c"

# The stand-in daemon creates the node a second after it starts, 0600 as CUSE
# would; /init must wait for it and make it 0666 before the test runs.
"$here/run-vm.sh" \
  --daemon "$work/sleep_daemon" --daemon-args "--mknod /dev/kqueue" \
  --test "$work/cuse_smoke" --test-args "--device /dev/kqueue" \
  --device /dev/kqueue --timeout 180 "$@"
