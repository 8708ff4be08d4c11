// KQ_IOC_KEVENT_INLINE_* (ABI 3) at the ioctl level, against a private
// daemon: changes and events in the one array of the argument, the reply's
// size, the errno contract, every capacity, and parked calls ended by an
// event, a timeout, a signal and a close. The same source runs in the CUSE
// tier's VM (tests/cuse), where the kernel's RETRY path carries the bytes.
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/raw_kevent.h"

namespace kqd {
namespace testing {
namespace {

using Clock = std::chrono::steady_clock;

// The largest argument: every command's fits in it.
struct InlineArg {
  kq_kevent_inline head;
  kq_kevent ev[KQ_KEVENT_INLINE_MAX];
};

const size_t kCapacities[] = {KQ_KEVENT_INLINE_CAP_1, KQ_KEVENT_INLINE_CAP_8,
                              KQ_KEVENT_INLINE_CAP_64, KQ_KEVENT_INLINE_CAP_408};

unsigned long CommandFor(size_t capacity) {
  switch (capacity) {
    case KQ_KEVENT_INLINE_CAP_1:
      return KQ_IOC_KEVENT_INLINE_1;
    case KQ_KEVENT_INLINE_CAP_8:
      return KQ_IOC_KEVENT_INLINE_8;
    case KQ_KEVENT_INLINE_CAP_64:
      return KQ_IOC_KEVENT_INLINE_64;
    default:
      return KQ_IOC_KEVENT_INLINE_408;
  }
}

// A fresh argument: the bytes after the header are 0xA5 (a sentinel), the
// changes are copied to ev[0, n), the kqueue descriptor is named.
std::unique_ptr<InlineArg> Arg(int kq, const std::vector<kq_kevent>& changes, uint32_t nevents,
                               long timeout_ms) {
  auto a = std::make_unique<InlineArg>();
  std::memset(a.get(), 0xA5, sizeof *a);
  a->head = kq_kevent_inline{};
  a->head.nchanges = static_cast<uint32_t>(changes.size());
  a->head.nevents = nevents;
  a->head.flags = KQ_KEVENT_KQFD;
  a->head.kq_fd = kq;
  if (timeout_ms >= 0) {
    a->head.flags |= KQ_KEVENT_TIMEOUT;
    a->head.timeout_sec = timeout_ms / 1000;
    a->head.timeout_nsec = (timeout_ms % 1000) * 1000000L;
  }
  if (!changes.empty()) std::memcpy(a->ev, changes.data(), changes.size() * sizeof(kq_kevent));
  return a;
}

// Whether ev[from, capacity) still holds the sentinel.
bool Untouched(const InlineArg& a, size_t from, size_t capacity) {
  const unsigned char* p = reinterpret_cast<const unsigned char*>(a.ev + from);
  for (size_t i = 0; i < (capacity - from) * sizeof(kq_kevent); i++)
    if (p[i] != 0xA5) return false;
  return true;
}

std::vector<kq_kevent> UserAdds(size_t n, uint64_t first_ident) {
  std::vector<kq_kevent> v;
  for (size_t i = 0; i < n; i++)
    v.push_back(Ev(first_ident + i, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER, 0,
                   1000 + first_ident + i));
  return v;
}

void Noop(int) {}

using Inline = SharedDaemonTest;

TEST_F(Inline, CommandNumbersAreServed) {
  for (size_t cap : kCapacities) {
    auto a = Arg(kq_, {}, 0, 0);
    EXPECT_EQ(ioctl(kq_, CommandFor(cap), a.get()), 0) << cap << ": " << strerror(errno);
  }
  // The same number with another size is another command.
  auto a = Arg(kq_, {}, 0, 0);
  EXPECT_EQ(ioctl(kq_, _IOC(_IOC_READ | _IOC_WRITE, 'k', 0x50, 112), a.get()), -1);
  EXPECT_EQ(errno, ENOTTY);
}

TEST_F(Inline, ChangesAndEventsShareTheArray) {
  // Eight triggered one-shot events added and collected in one call whose
  // events overwrite its changes: every change was taken before any event
  // was written.
  auto a = Arg(kq_, UserAdds(8, 1), 8, 0);
  ASSERT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_8, a.get()), 8) << strerror(errno);
  std::set<uint64_t> seen;
  for (int i = 0; i < 8; i++) {
    EXPECT_EQ(a->ev[i].filter, EVFILT_USER);
    EXPECT_EQ(a->ev[i].udata, 1000 + a->ev[i].ident);
    EXPECT_EQ(a->ev[i].reserved, 0u);
    seen.insert(a->ev[i].ident);
  }
  EXPECT_EQ(seen.size(), 8u);
  // Room for fewer events than changes: all eight changes apply, two
  // events come back over the first two changes, six stay pending.
  a = Arg(kq_, UserAdds(8, 101), 2, 0);
  ASSERT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_8, a.get()), 2);
  EXPECT_TRUE(Untouched(*a, 8, 8));
  kq_kevent rest[16];
  EXPECT_EQ(Kevent(kq_, nullptr, 0, rest, 16, 0), 6);
}

TEST_F(Inline, ReplyIsHeaderAndResultEventsOnly) {
  ASSERT_EQ(Change(kq_, Ev(7, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, 77)), 0);
  ASSERT_EQ(Change(kq_, Ev(7, EVFILT_USER, 0, NOTE_TRIGGER)), 0);
  for (size_t cap : kCapacities) {
    auto a = Arg(kq_, {}, static_cast<uint32_t>(cap), 0);
    const kq_kevent_inline head = a->head;
    int n = ioctl(kq_, CommandFor(cap), a.get());
    ASSERT_GE(n, 0) << strerror(errno);
    EXPECT_EQ(std::memcmp(&a->head, &head, sizeof head), 0) << "header changed";
    EXPECT_TRUE(Untouched(*a, n, cap)) << "capacity " << cap << ": written past event " << n;
    if (n == 1) EXPECT_EQ(a->ev[0].udata, 77u);
    ASSERT_EQ(Change(kq_, Ev(7, EVFILT_USER, 0, NOTE_TRIGGER)), 0);
  }
  // A failed call writes nothing at all.
  auto a = Arg(kq_, {Ev(99, EVFILT_USER, EV_DELETE)}, 0, 0);
  const kq_kevent_inline head = a->head;
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_1, a.get()), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(std::memcmp(&a->head, &head, sizeof head), 0);
  EXPECT_EQ(a->ev[0].ident, 99u);
  EXPECT_TRUE(Untouched(*a, 1, 1));
}

TEST_F(Inline, ErrorAndReceiptEntries) {
  std::vector<kq_kevent> changes = {Ev(1, EVFILT_USER, EV_DELETE, 0, 0, 11),
                                    Ev(2, 4242, EV_ADD, 0, 0, 12),
                                    Ev(3, EVFILT_USER, EV_ADD | EV_RECEIPT, 0, 0, 13),
                                    Ev(3, EVFILT_USER, 0, NOTE_TRIGGER)};
  auto a = Arg(kq_, changes, 8, 0);
  ASSERT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_8, a.get()), 3) << strerror(errno);
  EXPECT_EQ(a->ev[0].flags, EV_ERROR);
  EXPECT_EQ(a->ev[0].data, ENOENT);
  EXPECT_EQ(a->ev[0].udata, 11u);
  EXPECT_EQ(a->ev[1].data, EINVAL);
  EXPECT_EQ(a->ev[1].udata, 12u);
  EXPECT_EQ(a->ev[2].flags, EV_ERROR);
  EXPECT_EQ(a->ev[2].data, 0);
  EXPECT_EQ(a->ev[2].udata, 13u);
  // The trigger after them was applied; with answers, no events collected.
  // ev[3] still holds the last change: the reply ends after the answers.
  EXPECT_EQ(a->ev[3].fflags, NOTE_TRIGGER);
  EXPECT_TRUE(Untouched(*a, 4, 8));
  kq_kevent out[2];
  ASSERT_EQ(Kevent(kq_, nullptr, 0, out, 2, 0), 1);
  EXPECT_EQ(out[0].ident, 3u);
  // No room for the answer: the change's errno.
  a = Arg(kq_, {Ev(5, EVFILT_USER, EV_DELETE)}, 0, 0);
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_1, a.get()), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(Inline, BadHeadersAreEinval) {
  for (size_t cap : kCapacities) {
    const unsigned long cmd = CommandFor(cap);
    auto a = Arg(kq_, UserAdds(1, 500), static_cast<uint32_t>(cap) + 1, 0);
    EXPECT_EQ(ioctl(kq_, cmd, a.get()), -1);
    EXPECT_EQ(errno, EINVAL) << "nevents past capacity " << cap;
    a = Arg(kq_, {}, 0, 0);
    a->head.nchanges = static_cast<uint32_t>(cap) + 1;
    EXPECT_EQ(ioctl(kq_, cmd, a.get()), -1);
    EXPECT_EQ(errno, EINVAL) << "nchanges past capacity " << cap;
    a = Arg(kq_, {}, 0, 0);
    a->head.nchanges = UINT32_MAX;
    EXPECT_EQ(ioctl(kq_, cmd, a.get()), -1);
    EXPECT_EQ(errno, EINVAL);
  }
  // Nothing of a refused call was applied.
  EXPECT_EQ(Change(kq_, Ev(500, EVFILT_USER, EV_DELETE)), ENOENT);
  auto a = Arg(kq_, {}, 1, 0);
  a->head.flags |= 0x80;
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_1, a.get()), -1);
  EXPECT_EQ(errno, EINVAL);
  a = Arg(kq_, {}, 1, 0);
  a->head.flags = 0;  // kq_fd set without KQ_KEVENT_KQFD
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_1, a.get()), -1);
  EXPECT_EQ(errno, EINVAL);
  a = Arg(kq_, {}, 1, 0);
  a->head.kq_fd = -3;
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_1, a.get()), -1);
  EXPECT_EQ(errno, EINVAL);
  a = Arg(kq_, {}, 0, 0);
  a->head.timeout_nsec = 1000000000;
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_1, a.get()), -1);
  EXPECT_EQ(errno, EINVAL);
  // An argument the kernel cannot copy is its own EFAULT.
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_8, reinterpret_cast<void*>(8)), -1);
  EXPECT_EQ(errno, EFAULT);
}

TEST_F(Inline, EveryCapacityCarriesAFullArray) {
  uint64_t ident = 10000;
  for (size_t cap : kCapacities) {
    auto a = Arg(kq_, UserAdds(cap, ident), 0, 0);
    ASSERT_EQ(ioctl(kq_, CommandFor(cap), a.get()), 0) << cap << ": " << strerror(errno);
    a = Arg(kq_, {}, static_cast<uint32_t>(cap), 0);
    ASSERT_EQ(ioctl(kq_, CommandFor(cap), a.get()), static_cast<int>(cap));
    std::set<uint64_t> seen;
    for (size_t i = 0; i < cap; i++) {
      EXPECT_EQ(a->ev[i].udata, 1000 + a->ev[i].ident);
      seen.insert(a->ev[i].ident);
    }
    EXPECT_EQ(seen.size(), cap);
    EXPECT_EQ(*seen.begin(), ident);
    EXPECT_EQ(*seen.rbegin(), ident + cap - 1);
    ident += cap;
  }
}

TEST_F(Inline, ParkedCallAnsweredByAnEvent) {
  ASSERT_EQ(Change(kq_, Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, 42)), 0);
  // The trigger races the parking: early or late, the event arrives once.
  for (int round = 0; round < 50; round++) {
    std::atomic<int> rc{-2};
    auto a = Arg(kq_, {}, 1, -1);
    std::thread waiter([&] { rc = ioctl(kq_, KQ_IOC_KEVENT_INLINE_1, a.get()); });
    if (round % 2) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_EQ(Change(kq_, Ev(1, EVFILT_USER, 0, NOTE_TRIGGER)), 0);
    waiter.join();
    ASSERT_EQ(rc.load(), 1) << "round " << round;
    EXPECT_EQ(a->ev[0].udata, 42u);
    EXPECT_EQ(a->ev[0].ident, 1u);
  }
}

TEST_F(Inline, ParkedCallEndsAtItsTimeout) {
  auto a = Arg(kq_, {}, 8, 120);
  auto start = Clock::now();
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT_INLINE_8, a.get()), 0);
  auto took = Clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(110));
  EXPECT_LT(took, std::chrono::milliseconds(3000));
  EXPECT_TRUE(Untouched(*a, 0, 8));
}

// A signal ends a parked call with EINTR; racing an event, the call either
// returns the event or fails with EINTR, and then the event is still
// pending: each trigger is seen exactly once.
TEST_F(Inline, SignalEndsAParkedCallAndLosesNoEvent) {
  struct sigaction sa{};
  sa.sa_handler = Noop;
  struct sigaction old;
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  ASSERT_EQ(Change(kq_, Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR)), 0);
  const pthread_t self = pthread_self();
  int eintr = 0;
  for (int round = 0; round < 40; round++) {
    std::thread poker([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(round < 4 ? 50 : 3));
      pthread_kill(self, SIGUSR1);
      if (round >= 4) Change(kq_, Ev(1, EVFILT_USER, 0, NOTE_TRIGGER));
    });
    auto a = Arg(kq_, {}, 1, 5000);
    auto start = Clock::now();
    int rc = ioctl(kq_, KQ_IOC_KEVENT_INLINE_1, a.get());
    int err = errno;
    poker.join();
    ASSERT_LT(Clock::now() - start, std::chrono::milliseconds(4000)) << "round " << round;
    if (round < 4) {
      // No event at all: only the signal can end it.
      ASSERT_EQ(rc, -1);
      ASSERT_EQ(err, EINTR);
      EXPECT_TRUE(Untouched(*a, 0, 1));
      eintr++;
      continue;
    }
    // The trigger was applied before the poker was joined.
    kq_kevent out[2];
    int later = Kevent(kq_, nullptr, 0, out, 2, 0);
    if (rc == 1) {
      EXPECT_EQ(later, 0) << "round " << round << ": the event came twice";
    } else {
      ASSERT_EQ(rc, -1);
      ASSERT_EQ(err, EINTR) << strerror(err);
      EXPECT_EQ(later, 1) << "round " << round << ": EINTR lost the event";
      eintr++;
    }
  }
  sigaction(SIGUSR1, &old, nullptr);
  EXPECT_GE(eintr, 4);
}

TEST(InlineClose, ParkedCallEndsWithEbadf) {
  struct stat dev_st;
  if (stat(SharedDaemon().device().c_str(), &dev_st) == 0 && S_ISCHR(dev_st.st_mode))
    GTEST_SKIP() << "CUSE sends no FLUSH: close() cannot wake a parked call there";
  for (int round = 0; round < 10; round++) {
    int kq = SharedDaemon().OpenKqueue();
    ASSERT_GE(kq, 0);
    std::atomic<int> rc{0}, err{0};
    std::atomic<bool> done{false};
    auto a = Arg(kq, {}, 1, -1);
    std::thread waiter([&] {
      rc = ioctl(kq, KQ_IOC_KEVENT_INLINE_1, a.get());
      err = errno;
      done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(round % 2 ? 1 : 30));
    ASSERT_EQ(close(kq), 0);
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (!done && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (!done) {
      waiter.detach();
      FAIL() << "round " << round << ": the parked call outlived close()";
    }
    waiter.join();
    EXPECT_EQ(rc.load(), -1);
    EXPECT_EQ(err.load(), EBADF) << strerror(err.load());
  }
}

}  // namespace
}  // namespace testing
}  // namespace kqd
