#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan: --config=fuzz) and runs
# each for a bounded time, starting from its corpus in tests/fuzz/corpus.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 45; CI's run: 2 x 45 s)
#
# New interesting inputs go to a scratch copy of the corpus, not the tree. A
# crash leaves crash-* in the scratch directory and fails the script: add
# that file to tests/fuzz/corpus/<target>/ (the replay tests then run it in
# every `bazel test`), and fix the bug.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-45}
bazel build --config=fuzz //tests/fuzz:change_fuzzer //tests/fuzz:ioctl_fuzzer
bin=$(bazel info --config=fuzz bazel-bin)
scratch=$(mktemp -d /tmp/kqueued-fuzz.XXXXXX)
status=0
for target in change ioctl; do
  mkdir -p "${scratch}/${target}"
  cp tests/fuzz/corpus/${target}/* "${scratch}/${target}/"
  echo "== ${target}_fuzzer for ${seconds} s (scratch: ${scratch})"
  if ! (cd "${scratch}" && "${bin}/tests/fuzz/${target}_fuzzer" -max_total_time="${seconds}" \
        -timeout=20 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 "${target}" \
        2>&1 | grep -E 'stat::(number_of_executed|new_units|peak_rss)|ERROR|SUMMARY|runtime error|Test unit written'); then
    status=1
  fi
  if ls "${scratch}"/crash-* "${scratch}"/leak-* "${scratch}"/timeout-* >/dev/null 2>&1; then
    echo "${target}_fuzzer found a failing input: $(ls "${scratch}"/{crash,leak,timeout}-* 2>/dev/null)"
    status=1
  fi
done
[ "${status}" -eq 0 ] && rm -rf "${scratch}"
exit "${status}"
