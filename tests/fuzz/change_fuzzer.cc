// libFuzzer target over the core's change handling: each input is a run of
// kevent calls on a fresh kqueue of an in-process core with every system
// filter (the test process as the caller). What must hold for any input:
// no crash, no sanitizer report, no hang, and the kqueue's resources all
// given back when it closes (the user's counters return to zero).
//
// Input format, repeated: one control byte, then one 40-byte kq_kevent.
//   control bit 0: map the filter into the known range (most inputs should
//                  reach real filters, a few keep their raw number)
//   control bit 1: collect up to 4 events in the same call (zero timeout)
//   control bit 2: tame the ident of fd filters to a small descriptor
//                  number (0..31: the process's own files)
// Built two ways (tests/fuzz/BUILD): with libFuzzer under --config=fuzz,
// and with fuzz_replay_main.cc as a regression test that runs the corpus.
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "daemon/core/user_limits.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"

namespace {

kqd::testing::TestRuntime& Runtime() {
  // Small limits, so inputs reach the limit paths too. Never destroyed:
  // libFuzzer exits without running destructors.
  static kqd::testing::TestRuntime* rt = [] {
    kqd::LimitConfig limits;
    limits.knotes = 64;
    limits.timers = 16;
    limits.kqueues = 8;
    limits.daemon_fds = 8;
    return new kqd::testing::TestRuntime(limits);
  }();
  return *rt;
}

bool IsFdFilter(uint32_t filter) {
  return filter == EVFILT_READ || filter == EVFILT_WRITE || filter == EVFILT_VNODE ||
         filter == EVFILT_EMPTY;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kqd::testing::TestRuntime& rt = Runtime();
  {
    std::unique_ptr<kqd::testing::TestQueue> q = rt.NewQueue();
    const timespec zero{0, 0};
    constexpr size_t kRecord = 1 + sizeof(kq_kevent);
    // Bounded work per input: at most 64 calls.
    for (size_t at = 0, calls = 0; at + kRecord <= size && calls < 64; at += kRecord, calls++) {
      const uint8_t control = data[at];
      kq_kevent ev;
      memcpy(&ev, data + at + 1, sizeof ev);
      if (control & 1) ev.filter %= EVFILT_SYSCOUNT + 1;
      if ((control & 4) && IsFdFilter(ev.filter)) ev.ident %= 32;
      // A timer that fires at most every microsecond keeps a run short
      // without hiding the tiny-period paths.
      std::vector<kq_kevent> out;
      int error = 0;
      q->Kevent({ev}, &out, (control & 2) ? 4 : 0, &zero, &error);
    }
  }
  // Every knote, timer and kqueue of this input was given back.
  kqd::UserLimits& limits = rt.get()->limits();
  const uid_t uid = geteuid();
  for (kqd::Resource r : {kqd::Resource::kKnotes, kqd::Resource::kTimers,
                          kqd::Resource::kFastTimers, kqd::Resource::kKqueues,
                          kqd::Resource::kDaemonFds}) {
    // A reactor callback already dispatched may hold a knote a moment
    // longer (it finds it detached and lets go): wait for that, briefly.
    for (int i = 0; i < 200 && limits.InUse(uid, r) != 0; i++) usleep(1000);
    if (limits.InUse(uid, r) != 0) {
      fprintf(stderr, "change_fuzzer: resource %d still charged after close\n",
              static_cast<int>(r));
      abort();
    }
  }
  return 0;
}
