#!/usr/bin/env bash
# Sets up a Debian 12 machine (as root) and runs every test of the project:
# unit tests of the core, integration tests against private daemons (FUSE
# transport), the client libraries and examples, the CUSE tier in a VM, and
# the native tiers again under ASan+UBSan and the core under TSan.
set -euo pipefail
cd "$(dirname "$0")/.."

# Packages, and the stock kernel the CUSE tier boots (fetched once, cached).
bash scripts/setup-deps.sh --vm-kernel

status=0
run() {
  echo "== $*"
  "$@" 2>&1 | tee -a "${log}" || status=1
}
log=$(mktemp /tmp/kqueued-test-log.XXXXXX)

run bazel test //...
# ASan+UBSan on everything that runs natively (the daemon the integration
# tests start is then an instrumented build too), not the static binaries of
# the VM tier; TSan on the in-process core, where the threads are.
run bazel test --config=asan -- //tests/... -//tests/vm/... -//tests/cuse/...
run bazel test --config=tsan //tests/core/... //tests/filters/...
# The locks the compiler checks: the daemon built with clang's
# -Wthread-safety, every finding an error (daemon/util/thread_annotations.h).
run bazel build --config=tsa //daemon/... //plugins/...
# The libFuzzer targets (clang), 45 s each: 90 s of fuzzing in all. Last,
# because --config=fuzz switches the C++ toolchain (a full rebuild).
run bash scripts/fuzz.sh 45

# One closing line for CI: counted from Bazel's per-target verdicts.
passed=$(grep -cE '^//.* PASSED' "${log}" || true)
failed=$(grep -cE '^//.* (FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "${log}" || true)
rm -f "${log}"
[ "${failed}" -eq 0 ] || status=1
echo "${passed} passed, ${failed} failed"
exit "${status}"
