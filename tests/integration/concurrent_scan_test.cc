// Two threads of one process poll one kqueue with zero-timeout kevent() on
// one always-readable pipe (EVFILT_READ, level-triggered): every call must
// return the event. This is NetBSD's t_scan:scan1 (PR kern/50094, a
// collector that missed an event another collector had taken off the queue
// for a moment), driven through a private daemon and looped: with the
// serving pool the two calls really run at once. One variant keeps the
// daemon busy (another client registering and deleting knotes on its own
// queue). PollersRightAfterTheWriteSeeTheEvent follows t_scan's order (register, write,
// poll), which is where main failed: not in the scan, but because the
// write's wake-up had not reached the knote yet (see there).
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <string>
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

constexpr int kPollers = 2;
constexpr int kCallsPerPoller = 10000;

// kevent() as the client library makes it (KQ_KEVENT_KQFD set), zero timeout.
int PollOnce(int kq, kq_kevent* out) {
  kq_kevent_args a{};
  a.eventlist = reinterpret_cast<uint64_t>(out);
  a.nevents = 1;
  a.flags = KQ_KEVENT_TIMEOUT | KQ_KEVENT_KQFD;
  a.kq_fd = kq;
  return ioctl(kq, KQ_IOC_KEVENT, &a);
}

struct Outcome {
  std::atomic<int> zero{0};
  std::atomic<int> errors{0};
  std::atomic<int> wrong{0};
  int first_errno = 0;
};

void RunScan(bool busy_daemon) {
  DaemonFixture& d = SharedDaemon();
  int kq = d.OpenKqueue();
  ASSERT_GE(kq, 0) << strerror(errno);
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(write(p[1], "x", 1), 1);  // readable for the whole test
  const kq_kevent add = Ev(p[0], EVFILT_READ, EV_ADD);
  ASSERT_EQ(Change(kq, add), 0);

  std::atomic<bool> stop{false};
  std::thread noise;
  if (busy_daemon) {
    noise = std::thread([&d, &stop] {
      int other = d.OpenKqueue();
      int q[2];
      if (other < 0 || pipe2(q, O_CLOEXEC) != 0) return;
      (void)write(q[1], "y", 1);
      while (!stop.load()) {
        kq_kevent c[2] = {Ev(q[0], EVFILT_READ, EV_ADD), Ev(q[1], EVFILT_WRITE, EV_ADD)};
        kq_kevent out[2];
        Kevent(other, c, 2, out, 2, 0);
        kq_kevent del[2] = {Ev(q[0], EVFILT_READ, EV_DELETE), Ev(q[1], EVFILT_WRITE, EV_DELETE)};
        Kevent(other, del, 2, nullptr, 0, 0);
      }
      close(q[0]);
      close(q[1]);
      close(other);
    });
  }

  Outcome o;
  std::vector<std::thread> pollers;
  for (int t = 0; t < kPollers; t++) {
    pollers.emplace_back([&] {
      for (int i = 0; i < kCallsPerPoller; i++) {
        kq_kevent ev{};
        int n = PollOnce(kq, &ev);
        if (n == 0) {
          o.zero++;
        } else if (n < 0) {
          if (o.errors++ == 0) o.first_errno = errno;
        } else if (ev.ident != static_cast<uint64_t>(p[0]) || ev.filter != EVFILT_READ ||
                   ev.data != 1) {
          o.wrong++;
        }
      }
    });
  }
  for (auto& t : pollers) t.join();
  stop = true;
  if (noise.joinable()) noise.join();

  EXPECT_EQ(o.zero.load(), 0) << "of " << kPollers * kCallsPerPoller
                              << " zero-timeout calls on a readable pipe";
  EXPECT_EQ(o.errors.load(), 0) << "first error: " << strerror(o.first_errno);
  EXPECT_EQ(o.wrong.load(), 0);
  // The knote survived the storm: a last call still reports it.
  kq_kevent ev{};
  EXPECT_EQ(PollOnce(kq, &ev), 1);
  close(p[0]);
  close(p[1]);
  close(kq);
}

TEST(ConcurrentScan, TwoPollersNeverMissALevelTriggeredEvent) { RunScan(false); }

// t_scan's exact order: the knote is added while the pipe is empty, the
// byte is written, and the pollers start at once. The write's wake-up
// reaches the daemon through its epoll and reactor thread; a kevent that
// arrives on a serving thread first must still see it (causality: BSD
// activates the knote inside write()). Many rounds, each on a fresh pipe,
// the pollers released right after the write. Before the causality
// catch-up, every run failed: 14-59 of 600 poller-rounds (300 rounds) saw
// no event, never after the poller had seen it once.
TEST(ConcurrentScan, PollersRightAfterTheWriteSeeTheEvent) {
  constexpr int kRounds = 300;
  constexpr int kCallsPerRound = 20;
  DaemonFixture& d = SharedDaemon();
  int kq = d.OpenKqueue();
  ASSERT_GE(kq, 0) << strerror(errno);
  std::atomic<int> round{-1};
  std::atomic<int> done{0};
  std::atomic<int> missed_rounds{0};
  std::atomic<int> zero_calls{0};
  std::atomic<int> lost_after_seen{0};  // a poller had seen it, then not
  std::vector<std::thread> pollers;
  for (int t = 0; t < kPollers; t++) {
    pollers.emplace_back([&] {
      for (int r = 0; r < kRounds; r++) {
        while (round.load() < r) {
          // Spin: released the moment the byte is written.
        }
        bool missed = false;
        bool seen = false;
        for (int i = 0; i < kCallsPerRound; i++) {
          kq_kevent ev{};
          if (PollOnce(kq, &ev) != 1) {
            missed = true;
            zero_calls++;
            if (seen) lost_after_seen++;
          } else {
            seen = true;
          }
        }
        if (missed) missed_rounds++;
        done++;
      }
    });
  }
  for (int r = 0; r < kRounds; r++) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    ASSERT_EQ(Change(kq, Ev(p[0], EVFILT_READ, EV_ADD)), 0);
    ASSERT_EQ(write(p[1], "x", 1), 1);
    round.store(r);
    while (done.load() < (r + 1) * kPollers) std::this_thread::yield();
    ASSERT_EQ(Change(kq, Ev(p[0], EVFILT_READ, EV_DELETE)), 0);
    close(p[0]);
    close(p[1]);
  }
  for (auto& t : pollers) t.join();
  EXPECT_EQ(missed_rounds.load(), 0)
      << "rounds (of " << kRounds << " x " << kPollers << " pollers) with a call that returned "
      << "no event; " << zero_calls.load() << " such calls of " << kRounds * kPollers * kCallsPerRound << ", "
      << lost_after_seen.load() << " after the same poller had seen the event";
  close(kq);
}

TEST(ConcurrentScan, TwoPollersOnABusyDaemon) { RunScan(true); }

}  // namespace
}  // namespace testing
}  // namespace kqd
