// The readiness of a kqueue descriptor whose owner collects some knotes
// itself (ABI 4), at the ioctl level against a private daemon: poll() on
// the descriptor and a parent kqueue's EVFILT_READ on it answer from the
// files as they are, not from local knotes the daemon queued before the
// owner drained their files through its own epoll instance — so a program
// that polls its kqueue descriptor, or nests the queue, neither spins nor
// misses a wake-up.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/ev.h"
#include "tests/support/raw_kevent.h"

namespace kqd {
namespace testing {
namespace {

using Clock = std::chrono::steady_clock;

// How long a test lets a wake-up take before calling it missed.
constexpr int kPatienceMs = 5000;
// How long a blocked poller is left alone before the pipe is written.
constexpr int kDelayMs = 200;

// A zero-timeout kevent call with the ABI 4 flags `flags`.
int KeventNow(int kq, const std::vector<kq_kevent>& changes, kq_kevent* out, size_t n,
              uint32_t flags) {
  kq_kevent_args a{};
  a.changelist = reinterpret_cast<uint64_t>(changes.data());
  a.nchanges = changes.size();
  a.eventlist = reinterpret_cast<uint64_t>(out);
  a.nevents = n;
  a.flags = flags | KQ_KEVENT_TIMEOUT;
  return ioctl(kq, KQ_IOC_KEVENT, &a);
}

// poll() on one descriptor for POLLIN; returns revents (0 on timeout).
short PollIn(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int n = poll(&p, 1, timeout_ms);
  return n > 0 ? p.revents : 0;
}

// What a thread blocked on a descriptor got, and when.
struct Woken {
  int result;
  Clock::time_point at;
};

class LocalPoll : public SharedDaemonTest {
 protected:
  void SetUp() override {
    SharedDaemonTest::SetUp();
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    ASSERT_GE(ep_, 0);
    ASSERT_EQ(pipe2(pipe_, O_CLOEXEC | O_NONBLOCK), 0);
    // kq_ is the owner's queue, with a local READ knote on the pipe.
    kq_local_attach a{};
    a.epoll_fd = ep_;
    a.tag = 1;
    ASSERT_EQ(ioctl(kq_, KQ_IOC_LOCAL_ATTACH, &a), 0) << errno;
    kq_kevent read = Ev(static_cast<uint64_t>(pipe_[0]), EVFILT_READ, EV_ADD);
    read.reserved = KQ_CHANGE_LOCAL;
    ASSERT_EQ(KeventNow(kq_, {read}, nullptr, 0, KQ_KEVENT_LOCAL_CHANGES), 0) << errno;
  }
  void TearDown() override {
    for (int fd : {ep_, pipe_[0], pipe_[1]}) {
      if (fd >= 0) close(fd);
    }
    SharedDaemonTest::TearDown();
  }
  // Writes a byte and lets the daemon queue the knote: the owner's
  // SKIP_LOCAL call catches up with the wake-up and leaves the knote queued.
  void WriteAndLetTheDaemonQueue() {
    ASSERT_EQ(write(pipe_[1], "x", 1), 1);
    kq_kevent out[2];
    ASSERT_EQ(KeventNow(kq_, {}, out, 2, KQ_KEVENT_SKIP_LOCAL), 0);
  }
  // The owner drains the pipe (as it would after its own epoll said so).
  void Drain() {
    char buf[16];
    ASSERT_GT(read(pipe_[0], buf, sizeof buf), 0);
  }
  // A new kqueue of the daemon's, watching `child` with EVFILT_READ (the
  // child's descriptor named first with KQ_KEVENT_KQFD, so the daemon knows
  // which kqueue it is).
  int Parent(int child) {
    kq_kevent_args name{};
    name.flags = KQ_KEVENT_KQFD | KQ_KEVENT_TIMEOUT;
    name.kq_fd = child;
    EXPECT_EQ(ioctl(child, KQ_IOC_KEVENT, &name), 0) << errno;
    int parent = SharedDaemon().OpenKqueue();
    EXPECT_GE(parent, 0);
    EXPECT_EQ(Change(parent, Ev(static_cast<uint64_t>(child), EVFILT_READ, EV_ADD)), 0);
    return parent;
  }

  int ep_ = -1;
  int pipe_[2] = {-1, -1};
};

TEST_F(LocalPoll, PollIsExactAfterTheOwnerDrains) {
  EXPECT_EQ(PollIn(kq_, 0), 0);
  WriteAndLetTheDaemonQueue();
  // The byte is there: readable, as often as asked.
  EXPECT_TRUE(PollIn(kq_, 0) & POLLIN);
  EXPECT_TRUE(PollIn(kq_, 0) & POLLIN);
  Drain();
  // The daemon still held the knote as queued; the answer looks at the pipe.
  EXPECT_EQ(PollIn(kq_, 0), 0);
  EXPECT_EQ(PollIn(kq_, 0), 0);
  // Again, and a plain call agrees with each answer.
  WriteAndLetTheDaemonQueue();
  EXPECT_TRUE(PollIn(kq_, 0) & POLLIN);
  kq_kevent out[2];
  ASSERT_EQ(KeventNow(kq_, {}, out, 2, 0), 1);
  EXPECT_EQ(out[0].data, 1);
  Drain();
  EXPECT_EQ(PollIn(kq_, 0), 0);
  EXPECT_EQ(KeventNow(kq_, {}, out, 2, 0), 0);
}

TEST_F(LocalPoll, EpollOnTheDescriptorIsExactToo) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  epoll_event e{};
  e.events = EPOLLIN;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, kq_, &e), 0);
  epoll_event got[1];
  WriteAndLetTheDaemonQueue();
  EXPECT_EQ(epoll_wait(ep, got, 1, kPatienceMs), 1);
  Drain();
  EXPECT_EQ(epoll_wait(ep, got, 1, 0), 0);
  close(ep);
}

TEST_F(LocalPoll, ABlockedPollerIsWokenWhenThePipeFills) {
  // A stale knote on the queue first: the poller's look drops it and waits;
  // the write after that must wake it.
  WriteAndLetTheDaemonQueue();
  Drain();
  std::future<Woken> poller = std::async(std::launch::async, [this] {
    const short first = PollIn(kq_, 0);  // nothing, at once
    return Woken{first != 0 ? -1 : PollIn(kq_, kPatienceMs), Clock::now()};
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(kDelayMs));
  const Clock::time_point write_at = Clock::now();
  ASSERT_EQ(write(pipe_[1], "x", 1), 1);
  const Woken w = poller.get();
  EXPECT_EQ(w.result, POLLIN);
  EXPECT_GE(w.at, write_at) << "the poller did not wait for the write";
}

TEST_F(LocalPoll, ParentKqueueSeesDataAndDoesNotSpin) {
  int parent = Parent(kq_);
  kq_kevent out[2];
  EXPECT_EQ(KeventNow(parent, {}, out, 2, 0), 0);
  WriteAndLetTheDaemonQueue();
  ASSERT_EQ(KeventNow(parent, {}, out, 2, 0), 1);
  EXPECT_EQ(out[0].ident, static_cast<uint64_t>(kq_));
  EXPECT_EQ(out[0].filter, EVFILT_READ);
  EXPECT_EQ(out[0].data, 1);
  EXPECT_TRUE(PollIn(parent, 0) & POLLIN);
  Drain();
  // No spin: the parent finds nothing, at once and again.
  EXPECT_EQ(KeventNow(parent, {}, out, 2, 0), 0);
  EXPECT_EQ(KeventNow(parent, {}, out, 2, 0), 0);
  EXPECT_EQ(PollIn(parent, 0), 0);
  // Not queued by the daemon yet when the parent looks: the parent's own
  // catch-up hands the wake-up over.
  ASSERT_EQ(write(pipe_[1], "x", 1), 1);
  ASSERT_EQ(KeventNow(parent, {}, out, 2, 0), 1);
  EXPECT_EQ(out[0].data, 1);
  Drain();
  EXPECT_EQ(PollIn(parent, 0), 0);
  EXPECT_EQ(KeventNow(parent, {}, out, 2, 0), 0);
  close(parent);
}

TEST_F(LocalPoll, ParentsWaitingCallAndPollerAreWoken) {
  int parent = Parent(kq_);
  WriteAndLetTheDaemonQueue();
  Drain();  // stale on the child's queue
  std::future<Woken> waiter = std::async(std::launch::async, [parent] {
    kq_kevent out[2];
    int n = KeventRetryingEintr(parent, nullptr, 0, out, 2, kPatienceMs);
    return Woken{n == 1 && out[0].data == 1 ? 1 : -1 - n, Clock::now()};
  });
  std::future<Woken> poller = std::async(std::launch::async, [parent] {
    return Woken{PollIn(parent, kPatienceMs), Clock::now()};
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(kDelayMs));
  const Clock::time_point write_at = Clock::now();
  ASSERT_EQ(write(pipe_[1], "x", 1), 1);
  const Woken a = waiter.get();
  const Woken b = poller.get();
  EXPECT_EQ(a.result, 1);
  EXPECT_GE(a.at, write_at) << "a stale knote answered the waiting call";
  EXPECT_EQ(b.result, POLLIN);
  EXPECT_GE(b.at, write_at) << "a stale knote answered the poller";
  Drain();
  kq_kevent out[2];
  EXPECT_EQ(KeventNow(parent, {}, out, 2, 0), 0);
  close(parent);
}

TEST_F(LocalPoll, TwoLevelsOfNesting) {
  int parent = Parent(kq_);
  int grandparent = Parent(parent);
  kq_kevent out[2];
  WriteAndLetTheDaemonQueue();
  ASSERT_EQ(KeventNow(grandparent, {}, out, 2, 0), 1);
  EXPECT_EQ(out[0].ident, static_cast<uint64_t>(parent));
  EXPECT_TRUE(PollIn(grandparent, 0) & POLLIN);
  Drain();
  EXPECT_EQ(PollIn(grandparent, 0), 0);
  EXPECT_EQ(KeventNow(grandparent, {}, out, 2, 0), 0);
  EXPECT_EQ(PollIn(parent, 0), 0);
  close(grandparent);
  close(parent);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
