// The C API of the client library — kqueue(), kqueue1(), kevent() and the
// KFILTER ioctls through <sys/event.h> — against a private daemon.
#include <sys/event.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/util/scoped_fd.h"
#include "tests/client/client_test_support.h"
#include "tests/support/daemon_fixture.h"

namespace kqd {
namespace client_test {
namespace {

struct Pipe {
  ScopedFd r, w;
  Pipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) == 0) {
      r.reset(fds[0]);
      w.reset(fds[1]);
    }
  }
};

const struct timespec kZero = {0, 0};

class KqueueTest : public ClientTest {};

// ---- kqueue() and kqueue1() ----------------------------------------------

TEST_F(KqueueTest, KqueueIsNotCloseOnExecNorNonBlocking) {
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0) << strerror(errno);
  EXPECT_EQ(fcntl(kq.get(), F_GETFD) & FD_CLOEXEC, 0);
  int fl = fcntl(kq.get(), F_GETFL);
  EXPECT_EQ(fl & O_ACCMODE, O_RDWR);
  EXPECT_EQ(fl & O_NONBLOCK, 0);
}

TEST_F(KqueueTest, Kqueue1Flags) {
  {
    ScopedFd kq(kqueue1(0));
    ASSERT_GE(kq.get(), 0) << strerror(errno);
    EXPECT_EQ(fcntl(kq.get(), F_GETFD) & FD_CLOEXEC, 0);
    EXPECT_EQ(fcntl(kq.get(), F_GETFL) & O_NONBLOCK, 0);
  }
  {
    ScopedFd kq(kqueue1(O_CLOEXEC));
    ASSERT_GE(kq.get(), 0) << strerror(errno);
    EXPECT_NE(fcntl(kq.get(), F_GETFD) & FD_CLOEXEC, 0);
    EXPECT_EQ(fcntl(kq.get(), F_GETFL) & O_NONBLOCK, 0);
  }
  {
    ScopedFd kq(kqueue1(O_NONBLOCK));
    ASSERT_GE(kq.get(), 0) << strerror(errno);
    EXPECT_EQ(fcntl(kq.get(), F_GETFD) & FD_CLOEXEC, 0);
    EXPECT_NE(fcntl(kq.get(), F_GETFL) & O_NONBLOCK, 0);
  }
  {
    ScopedFd kq(kqueue1(O_CLOEXEC | O_NONBLOCK));
    ASSERT_GE(kq.get(), 0) << strerror(errno);
    EXPECT_NE(fcntl(kq.get(), F_GETFD) & FD_CLOEXEC, 0);
    EXPECT_NE(fcntl(kq.get(), F_GETFL) & O_NONBLOCK, 0);
    EXPECT_EQ(fcntl(kq.get(), F_GETFL) & O_ACCMODE, O_RDWR);
  }
}

TEST_F(KqueueTest, Kqueue1RejectsOtherFlags) {
  for (int flags : {O_APPEND, O_TRUNC, O_CREAT, O_WRONLY, O_CLOEXEC | O_SYNC, O_DIRECTORY}) {
    errno = 0;
    EXPECT_EQ(kqueue1(flags), -1) << flags;
    EXPECT_EQ(errno, EINVAL) << flags;
  }
}

TEST_F(KqueueTest, NonBlockingQueueStillHonoursTheTimeout) {
  // O_NONBLOCK is a property of the descriptor; kevent() waits as told.
  ScopedFd kq(kqueue1(O_NONBLOCK | O_CLOEXEC));
  ASSERT_GE(kq.get(), 0);
  struct kevent out;
  struct timespec ts = {0, 100 * 1000 * 1000};
  int64_t start = NowMs();
  EXPECT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, &ts), 0) << strerror(errno);
  EXPECT_GE(NowMs() - start, 90);
}

// Restores $KQUEUE_DEVICE when a test that changes it ends.
class DeviceEnvGuard {
 public:
  DeviceEnvGuard() : saved_(getenv(KQ_DEVICE_ENV) ? getenv(KQ_DEVICE_ENV) : "") {}
  ~DeviceEnvGuard() { setenv(KQ_DEVICE_ENV, saved_.c_str(), 1); }

 private:
  std::string saved_;
};

TEST_F(KqueueTest, NoDaemonIsEnosys) {
  DeviceEnvGuard guard;
  setenv(KQ_DEVICE_ENV, "/nonexistent-kqueued-dir/kqueue", 1);
  errno = 0;
  EXPECT_EQ(kqueue(), -1);
  EXPECT_EQ(errno, ENOSYS);
  errno = 0;
  EXPECT_EQ(kqueue1(O_CLOEXEC), -1);
  EXPECT_EQ(errno, ENOSYS);
}

TEST_F(KqueueTest, NotAKqueueDeviceIsEnosys) {
  DeviceEnvGuard guard;
  // A character device and a regular file: both open, neither answers the
  // version handshake.
  setenv(KQ_DEVICE_ENV, "/dev/null", 1);
  errno = 0;
  EXPECT_EQ(kqueue(), -1);
  EXPECT_EQ(errno, ENOSYS);

  std::string path = std::string(getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp") +
                     "/not-a-kqueue";
  ScopedFd f(open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  ASSERT_GE(f.get(), 0);
  setenv(KQ_DEVICE_ENV, path.c_str(), 1);
  errno = 0;
  EXPECT_EQ(kqueue(), -1);
  EXPECT_EQ(errno, ENOSYS);
  unlink(path.c_str());
}

TEST_F(KqueueTest, WorksAgainAfterTheDeviceIsBack) {
  {
    DeviceEnvGuard guard;
    setenv(KQ_DEVICE_ENV, "/nonexistent-kqueued-dir/kqueue", 1);
    EXPECT_EQ(kqueue(), -1);
  }
  ScopedFd kq(kqueue());
  EXPECT_GE(kq.get(), 0) << strerror(errno);
}

TEST_F(KqueueTest, EachCallIsANewQueue) {
  struct kevent add = Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR);
  KQ_SKIP_UNLESS_ACCEPTS(add, "EVFILT_USER");
  ScopedFd a(kqueue()), b(kqueue());
  ASSERT_GE(a.get(), 0);
  ASSERT_GE(b.get(), 0);
  struct kevent trigger = Ev(1, EVFILT_USER, 0, NOTE_TRIGGER);
  ASSERT_EQ(kevent(a.get(), &add, 1, nullptr, 0, nullptr), 0);
  ASSERT_EQ(kevent(a.get(), &trigger, 1, nullptr, 0, nullptr), 0);
  struct kevent out;
  EXPECT_EQ(kevent(b.get(), nullptr, 0, &out, 1, &kZero), 0);
  // The knote exists only in a: triggering it in b is ENOENT.
  errno = 0;
  EXPECT_EQ(kevent(b.get(), &trigger, 1, nullptr, 0, nullptr), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(kevent(a.get(), nullptr, 0, &out, 1, &kZero), 1);
}

// ---- kevent() round trips ----------------------------------------------

TEST_F(KqueueTest, UserEventRoundTrip) {
  KQ_SKIP_UNLESS_ACCEPTS(Ev(1, EVFILT_USER, EV_ADD), "EVFILT_USER");
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  void* const udata = reinterpret_cast<void*>(uintptr_t{0xdeadbeefcafef00dull});
  struct kevent add = Ev(42, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, udata);
  ASSERT_EQ(kevent(kq.get(), &add, 1, nullptr, 0, nullptr), 0) << strerror(errno);

  struct kevent out[2];
  EXPECT_EQ(kevent(kq.get(), nullptr, 0, out, 2, &kZero), 0);

  struct kevent trigger = Ev(42, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFCOPY | 0x123);
  // Poison the output, padding included: the daemon writes whole records.
  memset(out, 0xAA, sizeof out);
  ASSERT_EQ(kevent(kq.get(), &trigger, 1, out, 2, &kZero), 1) << strerror(errno);
  EXPECT_EQ(out[0].ident, 42u);
  EXPECT_EQ(out[0].filter, EVFILT_USER);
  EXPECT_EQ(out[0].fflags & NOTE_FFLAGSMASK, 0x123u);
  EXPECT_EQ(out[0].udata, udata);
  EXPECT_EQ(out[0].flags & EV_ERROR, 0u);
  uint32_t padding;
  memcpy(&padding, reinterpret_cast<const char*>(&out[0]) + 20, sizeof padding);
  EXPECT_EQ(padding, 0u) << "reserved bytes @20 must be zero on output";
  // EV_CLEAR: retrieved once.
  EXPECT_EQ(kevent(kq.get(), nullptr, 0, out, 2, &kZero), 0);
}

TEST_F(KqueueTest, AKqueueWatchesAnotherKqueue) {
  // kqueue() tells the daemon which descriptor each queue is, so nesting
  // works as on BSD: the outer queue reports the inner one's pending count.
  ScopedFd outer(kqueue());
  ScopedFd inner(kqueue());
  ASSERT_GE(outer.get(), 0);
  ASSERT_GE(inner.get(), 0);
  struct kevent watch = Ev(static_cast<uintptr_t>(inner.get()), EVFILT_READ, EV_ADD);
  ASSERT_EQ(kevent(outer.get(), &watch, 1, nullptr, 0, nullptr), 0) << strerror(errno);
  struct kevent out;
  EXPECT_EQ(kevent(outer.get(), nullptr, 0, &out, 1, &kZero), 0);
  struct kevent fire = Ev(7, EVFILT_USER, EV_ADD, NOTE_TRIGGER);
  ASSERT_EQ(kevent(inner.get(), &fire, 1, nullptr, 0, nullptr), 0);
  struct timespec wait = {2, 0};
  ASSERT_EQ(kevent(outer.get(), nullptr, 0, &out, 1, &wait), 1);
  EXPECT_EQ(out.ident, static_cast<uintptr_t>(inner.get()));
  EXPECT_EQ(out.data, 1);
  // A cycle is refused.
  struct kevent back = Ev(static_cast<uintptr_t>(outer.get()), EVFILT_READ, EV_ADD);
  EXPECT_EQ(kevent(inner.get(), &back, 1, nullptr, 0, nullptr), -1);
  EXPECT_EQ(errno, ELOOP);
}

TEST_F(KqueueTest, PipeReadRoundTrip) {
  Pipe p;
  ASSERT_GE(p.r.get(), 0);
  KQ_SKIP_UNLESS_ACCEPTS(Ev(p.r.get(), EVFILT_READ, EV_ADD), "EVFILT_READ on a pipe");
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  struct kevent add = Ev(p.r.get(), EVFILT_READ, EV_ADD, 0, 0, &p);
  ASSERT_EQ(kevent(kq.get(), &add, 1, nullptr, 0, nullptr), 0) << strerror(errno);
  struct kevent out;
  EXPECT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, &kZero), 0);
  ASSERT_EQ(write(p.w.get(), "hello", 5), 5);
  struct timespec second = {1, 0};
  ASSERT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, &second), 1);
  EXPECT_EQ(out.ident, static_cast<uintptr_t>(p.r.get()));
  EXPECT_EQ(out.filter, EVFILT_READ);
  EXPECT_EQ(out.data, 5);
  EXPECT_EQ(out.udata, static_cast<void*>(&p));
  close(p.w.release());
  ASSERT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, &second), 1);
  EXPECT_NE(out.flags & EV_EOF, 0u);
}

TEST_F(KqueueTest, TimerFires) {
  KQ_SKIP_UNLESS_ACCEPTS(Ev(1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 1000), "EVFILT_TIMER");
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  struct kevent add = Ev(7, EVFILT_TIMER, EV_ADD, 0, 20);  // 20 ms, periodic
  ASSERT_EQ(kevent(kq.get(), &add, 1, nullptr, 0, nullptr), 0) << strerror(errno);
  struct kevent out;
  struct timespec ts = {2, 0};
  ASSERT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, &ts), 1);
  EXPECT_EQ(out.ident, 7u);
  EXPECT_EQ(out.filter, EVFILT_TIMER);
  EXPECT_GE(out.data, 1);
}

// ---- Changes and errors -------------------------------------------------

TEST_F(KqueueTest, ReceiptAndErrors) {
  KQ_SKIP_UNLESS_ACCEPTS(Ev(1, EVFILT_USER, EV_ADD), "EVFILT_USER");
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  struct kevent changes[3] = {
      Ev(1, EVFILT_USER, EV_ADD | EV_RECEIPT),
      Ev(2, EVFILT_USER, EV_DELETE),  // never added
      Ev(3, 200, EV_ADD),             // no such filter
  };
  struct kevent out[3];
  ASSERT_EQ(kevent(kq.get(), changes, 3, out, 3, &kZero), 3) << strerror(errno);
  EXPECT_NE(out[0].flags & EV_ERROR, 0u);
  EXPECT_EQ(out[0].data, 0);
  EXPECT_NE(out[1].flags & EV_ERROR, 0u);
  EXPECT_EQ(out[1].data, ENOENT);
  EXPECT_NE(out[2].flags & EV_ERROR, 0u);
  EXPECT_EQ(out[2].data, EINVAL);
  // Without room for EV_ERROR entries the failure is the call's errno.
  errno = 0;
  EXPECT_EQ(kevent(kq.get(), &changes[1], 1, nullptr, 0, &kZero), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(KqueueTest, ManyEventsInOneCall) {
  KQ_SKIP_UNLESS_ACCEPTS(Ev(1, EVFILT_USER, EV_ADD), "EVFILT_USER");
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  // 2000 records are 80 KB each way: far past what a restricted FUSE ioctl
  // copies, so this checks that the arrays travel by address.
  const size_t n = 2000;
  std::vector<struct kevent> changes;
  for (size_t i = 0; i < n; i++)
    changes.push_back(Ev(i + 1, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER, 0,
                         reinterpret_cast<void*>(i)));
  ASSERT_EQ(kevent(kq.get(), changes.data(), n, nullptr, 0, nullptr), 0) << strerror(errno);
  std::vector<struct kevent> out(n + 10);
  ASSERT_EQ(kevent(kq.get(), nullptr, 0, out.data(), out.size(), &kZero), static_cast<int>(n));
  std::vector<bool> seen(n);
  for (size_t i = 0; i < n; i++) {
    size_t id = out[i].ident - 1;
    ASSERT_LT(id, n);
    EXPECT_FALSE(seen[id]);
    seen[id] = true;
    EXPECT_EQ(out[i].udata, reinterpret_cast<void*>(id));
  }
}

TEST_F(KqueueTest, NotAKqueueIsEbadf) {
  Pipe p;
  struct kevent out;
  errno = 0;
  EXPECT_EQ(kevent(p.r.get(), nullptr, 0, &out, 1, &kZero), -1);
  EXPECT_EQ(errno, EBADF) << strerror(errno);

  ScopedFd null(open("/dev/null", O_RDWR | O_CLOEXEC));
  errno = 0;
  EXPECT_EQ(kevent(null.get(), nullptr, 0, &out, 1, &kZero), -1);
  EXPECT_EQ(errno, EBADF) << strerror(errno);

  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  errno = 0;
  EXPECT_EQ(kevent(sv[0], nullptr, 0, &out, 1, &kZero), -1);
  EXPECT_EQ(errno, EBADF) << strerror(errno);
  close(sv[0]);
  close(sv[1]);

  errno = 0;
  EXPECT_EQ(kevent(-1, nullptr, 0, &out, 1, &kZero), -1);
  EXPECT_EQ(errno, EBADF);

  int kq = kqueue();
  ASSERT_GE(kq, 0);
  close(kq);
  errno = 0;
  EXPECT_EQ(kevent(kq, nullptr, 0, &out, 1, &kZero), -1);
  EXPECT_EQ(errno, EBADF);
}

// ---- Timeouts ----------------------------------------------------------

TEST_F(KqueueTest, ZeroTimeoutPolls) {
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  struct kevent out;
  int64_t start = NowMs();
  EXPECT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, &kZero), 0) << strerror(errno);
  EXPECT_LT(NowMs() - start, 50);
}

TEST_F(KqueueTest, TimeoutExpires) {
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  struct kevent out;
  struct timespec ts = {0, 100 * 1000 * 1000};
  int64_t start = NowMs();
  EXPECT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, &ts), 0) << strerror(errno);
  int64_t elapsed = NowMs() - start;
  EXPECT_GE(elapsed, 99);
  EXPECT_LT(elapsed, 2000);
}

TEST_F(KqueueTest, NoEventSlotsReturnsAtOnce) {
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  int64_t start = NowMs();
  EXPECT_EQ(kevent(kq.get(), nullptr, 0, nullptr, 0, nullptr), 0) << strerror(errno);
  EXPECT_LT(NowMs() - start, 50);
}

TEST_F(KqueueTest, InvalidTimeoutIsEinval) {
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  struct kevent out;
  for (struct timespec ts : {timespec{0, 1000000000}, timespec{0, -1}, timespec{-1, 0}}) {
    errno = 0;
    EXPECT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, &ts), -1);
    EXPECT_EQ(errno, EINVAL) << ts.tv_sec << "." << ts.tv_nsec;
  }
}

TEST_F(KqueueTest, NullTimeoutWaitsForTheEvent) {
  KQ_SKIP_UNLESS_ACCEPTS(Ev(1, EVFILT_USER, EV_ADD), "EVFILT_USER");
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  struct kevent add = Ev(5, EVFILT_USER, EV_ADD | EV_CLEAR);
  ASSERT_EQ(kevent(kq.get(), &add, 1, nullptr, 0, nullptr), 0);
  std::thread trigger([&] {
    usleep(150 * 1000);
    struct kevent t = Ev(5, EVFILT_USER, 0, NOTE_TRIGGER);
    EXPECT_EQ(kevent(kq.get(), &t, 1, nullptr, 0, nullptr), 0);
  });
  struct kevent out;
  int64_t start = NowMs();
  EXPECT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, nullptr), 1) << strerror(errno);
  EXPECT_GE(NowMs() - start, 140);
  EXPECT_EQ(out.ident, 5u);
  trigger.join();
}

// ---- Signals -------------------------------------------------------------

std::atomic<int> handled{0};
void OnSignal(int) { handled++; }

// Interrupts a blocking kevent() with SIGUSR1 installed with `sa_flags`.
void ExpectEintr(int sa_flags) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnSignal;
  sa.sa_flags = sa_flags;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  handled = 0;

  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  std::atomic<bool> done{false};
  pthread_t self = pthread_self();
  // Signal repeatedly: the first one may land before kevent() blocks.
  std::thread signaller([&] {
    usleep(100 * 1000);
    while (!done) {
      pthread_kill(self, SIGUSR1);
      usleep(100 * 1000);
    }
  });
  struct kevent out;
  int64_t start = NowMs();
  int rc = kevent(kq.get(), nullptr, 0, &out, 1, nullptr);  // would wait forever
  int err = errno;
  done = true;
  signaller.join();
  sigaction(SIGUSR1, &old, nullptr);
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(err, EINTR) << strerror(err);
  EXPECT_GE(handled.load(), 1);
  EXPECT_LT(NowMs() - start, 5000);
}

TEST_F(KqueueTest, SignalInterruptsWait) { ExpectEintr(0); }

// BSD's kevent() is never restarted, SA_RESTART or not.
TEST_F(KqueueTest, SignalInterruptsWaitEvenWithSaRestart) { ExpectEintr(SA_RESTART); }

// ---- close() of the kqueue while another thread waits on it ---------------
// NetBSD wakes the waiter and its kevent() fails with EBADF (issue 11 item 3).

// Parks `waiters` threads in kevent() on `kq` (no timeout); each records its
// result and errno.
struct Waiters {
  std::vector<std::thread> threads;
  std::vector<int> rc, err;
  std::atomic<int> done{0};
  Waiters(int kq, int n) : rc(n, 0), err(n, 0) {
    for (int i = 0; i < n; i++) {
      threads.emplace_back([this, kq, i] {
        struct kevent out;
        rc[i] = kevent(kq, nullptr, 0, &out, 1, nullptr);
        err[i] = errno;
        done++;
      });
    }
  }
  bool WaitAll(int64_t ms) {
    int64_t end = NowMs() + ms;
    while (done.load() < static_cast<int>(threads.size()) && NowMs() < end) usleep(2000);
    return done.load() == static_cast<int>(threads.size());
  }
  ~Waiters() {
    for (auto& t : threads) t.join();
  }
};

TEST_F(KqueueTest, CloseFromAnotherThreadWakesWaitersWithEbadf) {
  // Rounds, and several waiters, so a lost wake-up cannot pass by luck.
  // The close lands while the waiters are parked, on their way to parking,
  // or still inside the kernel's ioctl entry (where close()'s FLUSH can
  // overtake their request).
  for (int round = 0; round < 200; round++) {
    int kq = kqueue();
    ASSERT_GE(kq, 0);
    Waiters w(kq, 4);
    if (round % 20 == 19) {
      usleep(20 * 1000);  // surely parked
    } else {
      usleep((round * 37) % 400);  // racing the waiters' entry
    }
    ASSERT_EQ(close(kq), 0);
    ASSERT_TRUE(w.WaitAll(5000)) << "round " << round << ": a waiter stayed parked after close()";
    for (size_t i = 0; i < w.rc.size(); i++) {
      EXPECT_EQ(w.rc[i], -1);
      EXPECT_EQ(w.err[i], EBADF) << strerror(w.err[i]);
    }
  }
}

TEST_F(KqueueTest, ClosingADuplicateDoesNotWakeTheWaiter) {
  int kq = kqueue();
  ASSERT_GE(kq, 0);
  int copy = dup(kq);
  ASSERT_GE(copy, 0);
  Waiters w(kq, 1);
  usleep(50 * 1000);
  ASSERT_EQ(close(copy), 0);
  usleep(200 * 1000);
  EXPECT_EQ(w.done.load(), 0) << "closing a duplicate woke the waiter";
  ASSERT_EQ(close(kq), 0);
  ASSERT_TRUE(w.WaitAll(5000));
  EXPECT_EQ(w.err[0], EBADF);
}

TEST_F(KqueueTest, ChildClosingItsCopyDoesNotWakeTheParentsWaiter) {
  int kq = kqueue();
  ASSERT_GE(kq, 0);
  Waiters w(kq, 1);
  usleep(50 * 1000);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(close(kq) == 0 ? 0 : 1);
  int status;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  usleep(200 * 1000);
  EXPECT_EQ(w.done.load(), 0) << "the child's close() woke the parent's waiter";
  ASSERT_EQ(close(kq), 0);
  ASSERT_TRUE(w.WaitAll(5000));
  EXPECT_EQ(w.err[0], EBADF);
}

// ---- Polling the kqueue descriptor --------------------------------------

TEST_F(KqueueTest, PollSeesPendingEvents) {
  KQ_SKIP_UNLESS_ACCEPTS(Ev(1, EVFILT_USER, EV_ADD), "EVFILT_USER");
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  struct kevent add = Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR);
  ASSERT_EQ(kevent(kq.get(), &add, 1, nullptr, 0, nullptr), 0);
  struct pollfd p = {kq.get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  struct kevent t = Ev(1, EVFILT_USER, 0, NOTE_TRIGGER);
  ASSERT_EQ(kevent(kq.get(), &t, 1, nullptr, 0, nullptr), 0);
  p.revents = 0;
  EXPECT_EQ(poll(&p, 1, 1000), 1);
  EXPECT_NE(p.revents & POLLIN, 0);
}

// ---- KFILTER ioctls, through plain ioctl(2) -----------------------------

TEST_F(KqueueTest, FilterByName) {
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  const char* names[] = {"EVFILT_READ",   "EVFILT_WRITE", "EVFILT_AIO",  "EVFILT_VNODE",
                         "EVFILT_PROC",   "EVFILT_SIGNAL", "EVFILT_TIMER", "EVFILT_FS",
                         "EVFILT_USER",   "EVFILT_EMPTY"};
  for (uint32_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    struct kfilter_mapping m;
    memset(&m, 0, sizeof m);
    m.name = const_cast<char*>(names[i]);
    m.filter = 12345;
    ASSERT_EQ(ioctl(kq.get(), KFILTER_BYNAME, &m), 0) << names[i] << ": " << strerror(errno);
    EXPECT_EQ(m.filter, i) << names[i];
  }
  char unknown[] = "EVFILT_NOSUCH";
  struct kfilter_mapping m = {unknown, 0, 0};
  errno = 0;
  EXPECT_EQ(ioctl(kq.get(), KFILTER_BYNAME, &m), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(KqueueTest, FilterByNameTooLong) {
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  // No NUL within KFILTER_MAXNAME bytes: NetBSD's copyinstr gives
  // ENAMETOOLONG.
  std::string name(KFILTER_MAXNAME + 10, 'x');
  struct kfilter_mapping m = {&name[0], 0, 0};
  errno = 0;
  EXPECT_EQ(ioctl(kq.get(), KFILTER_BYNAME, &m), -1);
  EXPECT_EQ(errno, ENAMETOOLONG) << strerror(errno);
}

TEST_F(KqueueTest, FilterByFilter) {
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  char buf[KFILTER_MAXNAME];
  struct kfilter_mapping m = {buf, sizeof buf, EVFILT_TIMER};
  ASSERT_EQ(ioctl(kq.get(), KFILTER_BYFILTER, &m), 0) << strerror(errno);
  EXPECT_STREQ(buf, "EVFILT_TIMER");

  // Exactly room for the name and its NUL, then one byte short.
  char exact[13];
  m = {exact, sizeof exact, EVFILT_TIMER};
  ASSERT_EQ(ioctl(kq.get(), KFILTER_BYFILTER, &m), 0) << strerror(errno);
  EXPECT_STREQ(exact, "EVFILT_TIMER");
  m = {exact, sizeof exact - 1, EVFILT_TIMER};
  errno = 0;
  EXPECT_EQ(ioctl(kq.get(), KFILTER_BYFILTER, &m), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);

  m = {buf, sizeof buf, 9999};
  errno = 0;
  EXPECT_EQ(ioctl(kq.get(), KFILTER_BYFILTER, &m), -1);
  EXPECT_EQ(errno, ENOENT);
}

// ---- fork: this project shares the queue with children -------------------

TEST_F(KqueueTest, ChildSharesTheQueue) {
  KQ_SKIP_UNLESS_ACCEPTS(Ev(1, EVFILT_USER, EV_ADD), "EVFILT_USER");
  ScopedFd kq(kqueue());
  ASSERT_GE(kq.get(), 0);
  struct kevent add = Ev(9, EVFILT_USER, EV_ADD | EV_ONESHOT);
  ASSERT_EQ(kevent(kq.get(), &add, 1, nullptr, 0, nullptr), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child triggers the parent's knote through the inherited fd.
    struct kevent t;
    EV_SET(&t, 9, EVFILT_USER, 0, NOTE_TRIGGER, 0, 0);
    _exit(kevent(kq.get(), &t, 1, nullptr, 0, nullptr) == 0 ? 0 : 1);
  }
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  struct kevent out;
  struct timespec second = {1, 0};
  ASSERT_EQ(kevent(kq.get(), nullptr, 0, &out, 1, &second), 1);
  EXPECT_EQ(out.ident, 9u);
}

}  // namespace
}  // namespace client_test
}  // namespace kqd
