#!/usr/bin/env bash
# Entry point of the Bazel VM tests (sh_test rules in tests/vm/BUILD): makes
# sure the kernel cache is filled, then hands every argument to run-vm.sh.
#
# Why a separate script: a test must not depend on someone having run
# fetch-kernel.sh by hand, and fetch-kernel.sh is a no-op once the cache is
# complete (it needs network only on a machine's first run). The rules are
# tagged "local" so that this runs outside the sandbox and can read and fill
# the cache in /var/cache/kqueued-vm, and "exclusive" so that a 2-core machine
# does not emulate a whole VM while other tests are timing things.
set -euo pipefail

# Bazel runs a test from its runfiles tree, where this script and its data
# sit next to each other.
here="$(dirname "$0")"

"$here/fetch-kernel.sh"
exec "$here/run-vm.sh" "$@"
