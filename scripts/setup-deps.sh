#!/usr/bin/env bash
# Installs, idempotently, everything kqueued needs to build, run and test on a
# fresh Debian 12 machine (as root). Safe to run again: it installs only what is
# missing and refreshes apt's lists only when it has to install something.
#
#   setup-deps.sh              packages only (enough to build and run)
#   setup-deps.sh --vm-kernel  also Debian's stock kernel for the CUSE test
#                              tier, fetched with apt-get download into
#                              /var/cache/kqueued-vm (tests/vm/fetch-kernel.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

vm_kernel=0
for arg in "$@"; do
  case "$arg" in
    --vm-kernel) vm_kernel=1 ;;
    *) echo "usage: setup-deps.sh [--vm-kernel]" >&2; exit 2 ;;
  esac
done

packages=(
  # build
  bazel-bootstrap bazel-platforms default-jdk-headless g++ pkg-config
  # libraries the daemon and tests link
  libfuse3-dev fuse3 googletest libgtest-dev libgmock-dev libbenchmark-dev
  # Python client tests
  python3 python3-pytest
  # the Go example (examples/go) and its test
  golang-go
  # the Debian package's test: systemd-analyze verify, man page rendering
  systemd man-db groff-base
  # tools tests and scripts call: ip (the plug-in test's veth pair), pgrep,
  # readelf/nm (static-binary and install checks)
  iproute2 procps binutils
  # the CUSE-in-VM test tier (tests/vm): a stock Debian kernel booted in qemu
  qemu-system-x86 busybox-static cpio
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup-deps: all packages present"
fi

if [ "$vm_kernel" = 1 ]; then
  bash tests/vm/fetch-kernel.sh
fi
