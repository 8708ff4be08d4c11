// The device at the ioctl level, from separate processes, against a private
// daemon: kevent, KFILTER_BYNAME/BYFILTER, version, bad input, waiting,
// EINTR, poll, sharing across fork.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
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


using Device = SharedDaemonTest;

TEST_F(Device, VersionMatches) {
  kq_version v{};
  ASSERT_EQ(ioctl(kq_, KQ_IOC_VERSION, &v), 0);
  EXPECT_EQ(v.abi_version, KQ_ABI_VERSION);
  EXPECT_EQ(std::string(v.daemon_version).rfind("kqueued ", 0), 0u);
}

TEST_F(Device, UnknownIoctlIsEnotty) {
  int x = 0;
  EXPECT_EQ(ioctl(kq_, _IOWR('k', 0x7f, int), &x), -1);
  EXPECT_EQ(errno, ENOTTY);
}

TEST_F(Device, FilterByNameAndByFilter) {
  const char* names[] = {"EVFILT_READ",  "EVFILT_WRITE", "EVFILT_AIO",   "EVFILT_VNODE",
                         "EVFILT_PROC",  "EVFILT_SIGNAL", "EVFILT_TIMER", "EVFILT_FS",
                         "EVFILT_USER",  "EVFILT_EMPTY"};
  for (uint32_t i = 0; i < EVFILT_SYSCOUNT; i++) {
    kfilter_mapping m{};
    m.name = const_cast<char*>(names[i]);
    m.filter = 999;
    ASSERT_EQ(ioctl(kq_, KFILTER_BYNAME, &m), 0) << names[i];
    EXPECT_EQ(m.filter, i);
    char buf[64] = {};
    kfilter_mapping b{};
    b.name = buf;
    b.len = sizeof buf;
    b.filter = i;
    ASSERT_EQ(ioctl(kq_, KFILTER_BYFILTER, &b), 0);
    EXPECT_STREQ(buf, names[i]);
  }
}

TEST_F(Device, FilterLookupErrors) {
  kfilter_mapping m{};
  m.name = const_cast<char*>("EVFILT_NOPE");
  EXPECT_EQ(ioctl(kq_, KFILTER_BYNAME, &m), -1);
  EXPECT_EQ(errno, ENOENT);
  m.name = reinterpret_cast<char*>(8);  // unmapped
  EXPECT_EQ(ioctl(kq_, KFILTER_BYNAME, &m), -1);
  EXPECT_EQ(errno, EFAULT);
  std::string longname(300, 'A');
  m.name = longname.data();
  EXPECT_EQ(ioctl(kq_, KFILTER_BYNAME, &m), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);

  char small[8];
  kfilter_mapping b{};
  b.name = small;
  b.len = sizeof small;  // "EVFILT_TIMER" needs 13
  b.filter = EVFILT_TIMER;
  EXPECT_EQ(ioctl(kq_, KFILTER_BYFILTER, &b), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  b.len = 13;
  char exact[13];
  b.name = exact;
  EXPECT_EQ(ioctl(kq_, KFILTER_BYFILTER, &b), 0);
  EXPECT_STREQ(exact, "EVFILT_TIMER");
  b.filter = 12345;
  EXPECT_EQ(ioctl(kq_, KFILTER_BYFILTER, &b), -1);
  EXPECT_EQ(errno, ENOENT);
  b.filter = EVFILT_READ;
  b.name = reinterpret_cast<char*>(8);
  b.len = 64;
  EXPECT_EQ(ioctl(kq_, KFILTER_BYFILTER, &b), -1);
  EXPECT_EQ(errno, EFAULT);
}

TEST_F(Device, FilterNameAtTheEndOfAMapping) {
  // NetBSD reads the name as a string: one that ends right before an
  // unmapped page must not fault because a fixed 256 bytes were read.
  long page = sysconf(_SC_PAGESIZE);
  char* region = static_cast<char*>(
      mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(region, MAP_FAILED);
  ASSERT_EQ(mprotect(region + page, page, PROT_NONE), 0);
  const char name[] = "EVFILT_USER";
  char* at = region + page - sizeof name;
  memcpy(at, name, sizeof name);
  kfilter_mapping m{};
  m.name = at;
  EXPECT_EQ(ioctl(kq_, KFILTER_BYNAME, &m), 0) << strerror(errno);
  EXPECT_EQ(m.filter, EVFILT_USER);
  munmap(region, 2 * page);
}

TEST_F(Device, BadPointersAreEfault) {
  kq_kevent ev{};
  EXPECT_EQ(Kevent(kq_, reinterpret_cast<kq_kevent*>(8), 1, &ev, 1, 0), -1);
  EXPECT_EQ(errno, EFAULT);
  // Counts so large the buffer cannot exist.
  EXPECT_EQ(Kevent(kq_, &ev, UINT64_MAX / 8, nullptr, 0, 0), -1);
  EXPECT_EQ(errno, EFAULT);
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT, reinterpret_cast<void*>(8)), -1);
  EXPECT_EQ(errno, EFAULT);
}

TEST_F(Device, ReservedFieldsAndBadTimeoutsAreEinval) {
  kq_kevent_args a{};
  a.kq_fd = 1;  // without KQ_KEVENT_KQFD it must be zero
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT, &a), -1);
  EXPECT_EQ(errno, EINVAL);
  a.flags = KQ_KEVENT_KQFD;
  a.kq_fd = -5;
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT, &a), -1);
  EXPECT_EQ(errno, EINVAL);
  a = kq_kevent_args{};
  a.flags = 0x80;
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT, &a), -1);
  EXPECT_EQ(errno, EINVAL);
  kq_kevent out;
  a = kq_kevent_args{};
  a.eventlist = reinterpret_cast<uint64_t>(&out);
  a.nevents = 1;
  a.flags = KQ_KEVENT_TIMEOUT;
  a.timeout_nsec = 1000000000;
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT, &a), -1);
  EXPECT_EQ(errno, EINVAL);
  // Also with nevents 0 (docs/abi.md).
  a.eventlist = 0;
  a.nevents = 0;
  EXPECT_EQ(ioctl(kq_, KQ_IOC_KEVENT, &a), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST_F(Device, PollTimeoutAndEmptyCalls) {
  kq_kevent out[4];
  EXPECT_EQ(Kevent(kq_, nullptr, 0, out, 4, 0), 0);
  auto start = Clock::now();
  EXPECT_EQ(Kevent(kq_, nullptr, 0, out, 4, 120), 0);
  auto took = Clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(110));
  EXPECT_LT(took, std::chrono::milliseconds(3000));
  EXPECT_EQ(Kevent(kq_, nullptr, 0, nullptr, 0, -1), 0);  // nevents 0: at once
}

TEST_F(Device, UnknownFilterAndMissingKnote) {
  EXPECT_EQ(Change(kq_, Ev(1, 4242, EV_ADD)), EINVAL);
  EXPECT_EQ(Change(kq_, Ev(1, EVFILT_AIO, EV_ADD)), EINVAL);
  EXPECT_EQ(Change(kq_, Ev(1, EVFILT_USER, EV_DELETE)), ENOENT);
  kq_kevent changes[2] = {Ev(1, EVFILT_USER, EV_DELETE, 0, 0, 7), Ev(2, 4242, EV_ADD, 0, 0, 8)};
  kq_kevent out[4];
  ASSERT_EQ(Kevent(kq_, changes, 2, out, 4, 0), 2);
  EXPECT_EQ(out[0].flags, EV_ERROR);
  EXPECT_EQ(out[0].data, ENOENT);
  EXPECT_EQ(out[0].udata, 7u);
  EXPECT_EQ(out[1].data, EINVAL);
}

// `reserved` is zero on output: answers are copies of their changes but
// never echo the caller's `reserved` (ignored on input), receipt or error.
TEST_F(Device, AnswersHaveReservedZero) {
  kq_kevent changes[2] = {Ev(5, EVFILT_USER, EV_ADD | EV_RECEIPT, 0, 0, 9),
                          Ev(6, EVFILT_USER, EV_DELETE, 0, 0, 10)};
  changes[0].reserved = 0xdeadbeef;
  changes[1].reserved = 0xdeadbeef;
  kq_kevent out[4];
  std::memset(out, 0xff, sizeof out);
  ASSERT_EQ(Kevent(kq_, changes, 2, out, 4, 0), 2);
  EXPECT_EQ(out[0].flags, EV_ERROR);
  EXPECT_EQ(out[0].data, 0);
  EXPECT_EQ(out[0].udata, 9u);
  EXPECT_EQ(out[0].reserved, 0u);
  EXPECT_EQ(out[1].flags, EV_ERROR);
  EXPECT_EQ(out[1].data, ENOENT);
  EXPECT_EQ(out[1].reserved, 0u);
  // And the event of the knote registered with that word.
  ASSERT_EQ(Change(kq_, Ev(5, EVFILT_USER, 0, NOTE_TRIGGER)), 0);
  std::memset(out, 0xff, sizeof out);
  ASSERT_EQ(Kevent(kq_, nullptr, 0, out, 4, 0), 1);
  EXPECT_EQ(out[0].ident, 5u);
  EXPECT_EQ(out[0].reserved, 0u);
}

TEST_F(Device, UserEventBitExactRoundTrip) {
  const uint64_t ident = 0xfedcba9876543210ull, udata = 0xffffffffffffffffull;
  ASSERT_EQ(Change(kq_, Ev(ident, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, udata)), 0);
  ASSERT_EQ(Change(kq_, Ev(ident, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFCOPY | 0x123)), 0);
  kq_kevent out[2];
  ASSERT_EQ(Kevent(kq_, nullptr, 0, out, 2, 0), 1);
  EXPECT_EQ(out[0].ident, ident);
  EXPECT_EQ(out[0].udata, udata);
  EXPECT_EQ(out[0].filter, EVFILT_USER);
  EXPECT_EQ(out[0].fflags & NOTE_FFLAGSMASK, 0x123u);
}

TEST_F(Device, ManyEventsInOneCallHaveNoCeiling) {
  // 10,000 records = 400 KB each way, past FUSE's 16 KiB and CUSE's 128 KiB.
  constexpr size_t kN = 10000;
  std::vector<kq_kevent> changes(kN);
  for (size_t i = 0; i < kN; i++) changes[i] = Ev(i + 1, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER, 0, i);
  std::vector<kq_kevent> out(kN + 10);
  ASSERT_EQ(Kevent(kq_, changes.data(), kN, nullptr, 0, 0), 0) << strerror(errno);
  ASSERT_EQ(Kevent(kq_, nullptr, 0, out.data(), out.size(), 0), static_cast<int>(kN));
  std::set<uint64_t> seen;
  for (size_t i = 0; i < kN; i++) {
    seen.insert(out[i].ident);
    EXPECT_EQ(out[i].udata, out[i].ident - 1);
  }
  EXPECT_EQ(seen.size(), kN);
}

void NoopHandler(int) {}

TEST_F(Device, SignalInterruptsAWaitWithEintr) {
  struct sigaction sa{};
  sa.sa_handler = NoopHandler;
  sa.sa_flags = SA_RESTART;  // kevent is never restarted anyway
  struct sigaction old;
  sigaction(SIGALRM, &sa, &old);
  auto start = Clock::now();
  alarm(1);
  kq_kevent out;
  int rc = Kevent(kq_, nullptr, 0, &out, 1, -1);
  int err = errno;
  auto took = Clock::now() - start;
  sigaction(SIGALRM, &old, nullptr);
  EXPECT_EQ(rc, -1);
  EXPECT_EQ(err, EINTR);
  EXPECT_LT(took, std::chrono::milliseconds(2500));
}

TEST_F(Device, PollAndEpollSeePendingEvents) {
  ASSERT_EQ(Change(kq_, Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR)), 0);
  pollfd p{kq_, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ee{};
  ee.events = EPOLLIN;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, kq_, &ee), 0);
  std::thread trigger([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    int kq2 = kq_;
    Change(kq2, Ev(1, EVFILT_USER, 0, NOTE_TRIGGER));
  });
  EXPECT_EQ(poll(&p, 1, 5000), 1);
  EXPECT_TRUE(p.revents & POLLIN);
  EXPECT_EQ(epoll_wait(ep, &ee, 1, 5000), 1);
  trigger.join();
  kq_kevent out;
  EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 0), 1);
  EXPECT_EQ(poll(&p, 1, 0), 0);
  close(ep);
}

TEST_F(Device, WakesWhenAnotherProcessTriggers) {
  ASSERT_EQ(Change(kq_, Ev(5, EVFILT_USER, EV_ADD | EV_CLEAR)), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    usleep(100000);
    _exit(Change(kq_, Ev(5, EVFILT_USER, 0, NOTE_TRIGGER)) == 0 ? 0 : 1);
  }
  kq_kevent out;
  EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 5000), 1);
  EXPECT_EQ(out.ident, 5u);
  int status;
  waitpid(child, &status, 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(Device, SharedAcrossForkEachEventOnce) {
  constexpr int kEvents = 300, kWorkers = 3;
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  std::vector<pid_t> workers;
  for (int w = 0; w < kWorkers; w++) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(report[0]);
      for (;;) {
        kq_kevent ev;
        int n = Kevent(kq_, nullptr, 0, &ev, 1, 1000);
        if (n <= 0) _exit(0);
        uint32_t id = static_cast<uint32_t>(ev.ident);
        if (write(report[1], &id, sizeof id) != sizeof id) _exit(1);
      }
    }
    workers.push_back(pid);
  }
  close(report[1]);
  std::vector<kq_kevent> changes;
  for (int i = 0; i < kEvents; i++)
    changes.push_back(Ev(i, EVFILT_USER, EV_ADD | EV_ONESHOT, NOTE_TRIGGER));
  ASSERT_EQ(Kevent(kq_, changes.data(), changes.size(), nullptr, 0, 0), 0);
  std::vector<int> got(kEvents, 0);
  uint32_t id;
  while (read(report[0], &id, sizeof id) == sizeof id) got.at(id)++;
  close(report[0]);
  for (pid_t p : workers) waitpid(p, nullptr, 0);
  for (int i = 0; i < kEvents; i++) EXPECT_EQ(got[i], 1) << i;
}

TEST_F(Device, ForkedChildHasItsOwnFdKnotes) {
  // Hardening item 9: a child sharing the queue must not reach the parent's
  // fd knotes by naming the same number.
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(Change(kq_, Ev(p[0], EVFILT_READ, EV_ADD, 0, 0, 1)), 0);
  int q[2];
  ASSERT_EQ(pipe2(q, O_CLOEXEC), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int code = 0;
    // A number the child does not have (closed here, the parent's is open).
    close(q[0]);
    if (Change(kq_, Ev(q[0], EVFILT_READ, EV_ADD, 0, 0, 7)) != EBADF) code |= 1;
    // The parent's knote on p[0] is not the child's to change or delete.
    if (Change(kq_, Ev(p[0], EVFILT_READ, EV_DISABLE)) != ENOENT) code |= 2;
    if (Change(kq_, Ev(p[0], EVFILT_READ, EV_DELETE)) != ENOENT) code |= 4;
    // Its own knote on its own (inherited) descriptor is separate.
    if (Change(kq_, Ev(p[0], EVFILT_READ, EV_ADD, 0, 0, 2)) != 0) code |= 8;
    _exit(code);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // The child exited: its knote's descriptor is gone with it. The parent's
  // knote kept udata 1 and is the one event.
  ASSERT_EQ(Change(kq_, Ev(q[0], EVFILT_READ, EV_ADD, 0, 0, 3)), 0);
  ASSERT_EQ(write(p[1], "x", 1), 1);
  kq_kevent out[4];
  int n = Kevent(kq_, nullptr, 0, out, 4, 2000);
  ASSERT_EQ(n, 1);
  EXPECT_EQ(out[0].ident, static_cast<uint64_t>(p[0]));
  EXPECT_EQ(out[0].udata, 1u);
  for (int fd : {p[0], p[1], q[0], q[1]}) close(fd);
}

TEST_F(Device, ClientDyingWhileParkedLeavesOthersServed) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int kq = SharedDaemon().OpenKqueue();
    kq_kevent out;
    Kevent(kq, nullptr, 0, &out, 1, -1);  // parks forever
    _exit(0);
  }
  usleep(100000);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  kq_version v{};
  EXPECT_EQ(ioctl(kq_, KQ_IOC_VERSION, &v), 0);
  ASSERT_EQ(Change(kq_, Ev(1, EVFILT_USER, EV_ADD, NOTE_TRIGGER)), 0);
  kq_kevent out;
  EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 1000), 1);
}

// Causality of changes: a byte written before a kevent call is seen by a
// knote that call (re-)adds, whatever the daemon's reactor thread has done
// with the pipe's wake-up yet (NetBSD's f_attach looks at the pipe itself).
// Looped: the window is the reactor's dispatch of the write.
// Causality of changes: a byte written just before a kevent call is seen
// by an EV_ADD|EV_ENABLE of an EV_ONESHOT READ knote in that call, whatever
// the daemon's reactor thread has done with the pipe's wake-up yet — as on
// NetBSD, whose f_attach/f_event look at the pipe at once. The daemon's
// EV_ADD evaluates the file itself (FIONREAD or poll, under the queue's
// lock), so a wake-up still pending in the reactor cannot hide the byte;
// looped, each way of being re-added, with another queue sharing the
// pipe's epoll item or not, so that a dependence on the reactor's timing
// would show.
TEST_F(Device, ReAddedOneshotSeesAByteWrittenJustBefore) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  const kq_kevent add = Ev(p[0], EVFILT_READ, EV_ADD | EV_ENABLE | EV_ONESHOT, 0, 0, 3);
  const kq_kevent del = Ev(p[0], EVFILT_READ, EV_DELETE);
  // Each way, alone and with another queue watching the pipe: how many of
  // the iterations missed the event.
  constexpr int kWays = 4, kRounds = 200;
  int missed[2][kWays] = {};
  char c;
  for (int shared = 0; shared < 2; shared++) {
    int other = -1;
    if (shared) {
      other = SharedDaemon().OpenKqueue();
      ASSERT_GE(other, 0);
      ASSERT_EQ(Change(other, Ev(p[0], EVFILT_READ, EV_ADD | EV_CLEAR)), 0);
    }
    for (int i = 0; i < kRounds; i++) {
      for (int way = 0; way < kWays; way++) {
        kq_kevent out[2];
        if (way == 1) {
          // The knote is there, registered on the empty pipe (not fired).
          ASSERT_EQ(Change(kq_, add), 0);
        } else if (way == 2) {
          // It fired and was collected (a oneshot: gone) just before.
          ASSERT_EQ(Change(kq_, add), 0);
          ASSERT_EQ(write(p[1], "y", 1), 1);
          ASSERT_EQ(Kevent(kq_, nullptr, 0, out, 2, 1000), 1);
          ASSERT_EQ(read(p[0], &c, 1), 1);
        } else if (way == 3) {
          // It is there, disabled.
          ASSERT_EQ(Change(kq_, Ev(p[0], EVFILT_READ, EV_ADD | EV_DISABLE | EV_ONESHOT)), 0);
        }
        ASSERT_EQ(write(p[1], "x", 1), 1);
        const int n = Kevent(kq_, &add, 1, out, 2, 0);
        ASSERT_GE(n, 0);
        if (n != 1) missed[shared][way]++;
        ASSERT_EQ(read(p[0], &c, 1), 1);
        // A oneshot that did not fire is still there: dropped.
        if (n != 1) Change(kq_, del);
      }
    }
    if (other >= 0) close(other);
  }
  const char* what[kWays] = {"a new knote", "a knote registered on the empty pipe",
                             "a oneshot that fired just before", "a disabled knote"};
  for (int shared = 0; shared < 2; shared++)
    for (int way = 0; way < kWays; way++)
      EXPECT_EQ(missed[shared][way], 0)
          << "of " << kRounds << ", " << what[way] << (shared ? ", another queue watching" : "");
  close(p[0]);
  close(p[1]);
}

TEST_F(Device, PeerSeesEofWhileKnoteIsRegistered) {
  // The daemon must not keep the client's socket alive.
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_EQ(Change(kq_, Ev(sv[0], EVFILT_READ, EV_ADD)), 0);
  close(sv[0]);
  char c;
  pollfd p{sv[1], POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 2000), 1);
  EXPECT_EQ(read(sv[1], &c, 1), 0);  // EOF: the last reference is gone
  close(sv[1]);
}

TEST_F(Device, PipeReadFromTheCallersOwnFds) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(Change(kq_, Ev(p[0], EVFILT_READ, EV_ADD, 0, 0, 42)), 0);
  kq_kevent out;
  EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 0), 0);
  ASSERT_EQ(write(p[1], "hello", 5), 5);
  ASSERT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 2000), 1);
  EXPECT_EQ(out.ident, static_cast<uint64_t>(p[0]));
  EXPECT_EQ(out.data, 5);
  EXPECT_EQ(out.udata, 42u);
  close(p[1]);
  ASSERT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 2000), 1);
  EXPECT_TRUE(out.flags & EV_EOF);
  close(p[0]);
  EXPECT_EQ(Change(kq_, Ev(p[0], EVFILT_READ, EV_ADD)), EBADF);
}

// Tells the daemon that `fd` is this process's descriptor of its kqueue
// (what the client libraries do once per kqueue).
int NameKqueueFd(int fd) {
  kq_kevent_args a{};
  a.flags = KQ_KEVENT_KQFD;
  a.kq_fd = fd;
  return ioctl(fd, KQ_IOC_KEVENT, &a);
}

TEST_F(Device, KqueueNestsInAnotherKqueue) {
  int inner = SharedDaemon().OpenKqueue();
  ASSERT_GE(inner, 0);
  ASSERT_EQ(NameKqueueFd(inner), 0);
  ASSERT_EQ(Change(kq_, Ev(inner, EVFILT_READ, EV_ADD, 0, 0, 77)), 0);
  kq_kevent out;
  EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 0), 0);
  // An event pending in the inner queue makes the outer one report it.
  ASSERT_EQ(Change(inner, Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR, NOTE_TRIGGER)), 0);
  ASSERT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 2000), 1);
  EXPECT_EQ(out.ident, static_cast<uint64_t>(inner));
  EXPECT_EQ(out.filter, EVFILT_READ);
  EXPECT_EQ(out.data, 1);
  EXPECT_EQ(out.udata, 77u);
  // Drained, it is no longer readable.
  ASSERT_EQ(Kevent(inner, nullptr, 0, &out, 1, 0), 1);
  EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 0), 0);
  // A cycle is refused.
  ASSERT_EQ(NameKqueueFd(kq_), 0);
  EXPECT_EQ(Change(inner, Ev(kq_, EVFILT_READ, EV_ADD)), ELOOP);
  EXPECT_EQ(Change(kq_, Ev(kq_, EVFILT_READ, EV_ADD)), ELOOP);
  // Another descriptor of the same kqueue is recognised (kcmp).
  int copy = dup(inner);
  ASSERT_EQ(Change(kq_, Ev(copy, EVFILT_READ, EV_ADD)), 0);
  close(copy);
  close(inner);
}

TEST_F(Device, UnnamedKqueueFdIsEopnotsupp) {
  // Without KQ_KEVENT_KQFD the daemon cannot tell which kqueue this is.
  int other = SharedDaemon().OpenKqueue();
  ASSERT_GE(other, 0);
  EXPECT_EQ(Change(kq_, Ev(other, EVFILT_READ, EV_ADD)), EOPNOTSUPP);
  close(other);
}

int CountFds(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  int n = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

TEST_F(Device, ManyRegistrationsDoNotCostTheDaemonAnFdEach) {
  // RLIMIT_NOFILE is 20000 here: the daemon must not hold a descriptor per
  // knote. 3000 pipes = 6000 of the test's own fds.
  pid_t daemon = SharedDaemon().pid();
  if (daemon <= 0) GTEST_SKIP() << "daemon not started by this test";
  constexpr int kPipes = 3000;
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_max < 2 * kPipes + 100) GTEST_SKIP() << "RLIMIT_NOFILE hard limit too low";
  if (rl.rlim_cur < 2 * kPipes + 100) {
    rl.rlim_cur = rl.rlim_max;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  std::vector<int> fds;
  std::vector<kq_kevent> changes;
  for (int i = 0; i < kPipes; i++) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0) << strerror(errno);
    fds.push_back(p[0]);
    fds.push_back(p[1]);
    changes.push_back(Ev(p[0], EVFILT_READ, EV_ADD));
  }
  int before = CountFds(daemon);
  ASSERT_EQ(Kevent(kq_, changes.data(), changes.size(), nullptr, 0, 0), 0) << strerror(errno);
  int after = CountFds(daemon);
  // The fd filters spread their epoll items over instances of at most 64
  // (daemon/filters/fd/fd_watch.h, SHARDS): one descriptor per 64 files.
  EXPECT_LT(after - before, 16 + kPipes / 64 + 1) << "before " << before << ", after " << after;
  // And they all work: write to the last pipe.
  ASSERT_EQ(write(fds.back(), "z", 1), 1);
  kq_kevent out;
  ASSERT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 2000), 1);
  EXPECT_EQ(out.ident, static_cast<uint64_t>(fds[fds.size() - 2]));
  for (int fd : fds) close(fd);
}

TEST_F(Device, UnprivilegedUserIsServed) {
  passwd* nobody = getpwnam("nobody");
  if (!nobody) GTEST_SKIP() << "no user nobody";
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setgid(nobody->pw_gid) != 0 || setuid(nobody->pw_uid) != 0) _exit(2);
    int kq = SharedDaemon().OpenKqueue();
    if (kq < 0) _exit(3);
    int p[2];
    if (pipe(p) != 0) _exit(4);
    if (Change(kq, Ev(p[0], EVFILT_READ, EV_ADD)) != 0) _exit(5);
    if (write(p[1], "x", 1) != 1) _exit(6);
    kq_kevent out;
    if (Kevent(kq, nullptr, 0, &out, 1, 2000) != 1 || out.data != 1) _exit(7);
    _exit(0);
  }
  int status;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(Device, EmptyFiresWhenTheSendQueueIsDrained) {
  // Watched by the daemon through pidfd_getfd copies: fires while nothing
  // is queued, not while a peer that does not read leaves the connection
  // full, and again once the peer took everything. An AF_UNIX socketpair
  // always; a loopback TCP connection too where lo is up (not in the VM).
  auto check = [this](int writer, int reader, const char* what) {
    SCOPED_TRACE(what);
    const uint64_t udata = 0x8000000000000001ull;
    ASSERT_EQ(Change(kq_, Ev(writer, EVFILT_EMPTY, EV_ADD, 0, 0, udata)), 0);
    kq_kevent out;
    ASSERT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 2000), 1);  // nothing written yet
    EXPECT_EQ(out.ident, static_cast<uint64_t>(writer));
    EXPECT_EQ(out.filter, EVFILT_EMPTY);
    EXPECT_EQ(out.data, 0);
    EXPECT_EQ(out.udata, udata);

    ASSERT_EQ(fcntl(writer, F_SETFL, O_NONBLOCK), 0);
    std::string chunk(64 * 1024, 'q');
    size_t sent = 0;
    for (ssize_t n; (n = write(writer, chunk.data(), chunk.size())) > 0;) sent += n;
    ASSERT_EQ(errno, EAGAIN);
    EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 150), 0);

    std::string buf(256 * 1024, '\0');
    while (sent > 0) {
      ssize_t n = read(reader, &buf[0], std::min(sent, buf.size()));
      ASSERT_GT(n, 0) << strerror(errno);
      sent -= n;
    }
    ASSERT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 3000), 1);
    EXPECT_EQ(out.ident, static_cast<uint64_t>(writer));
    EXPECT_EQ(out.data, 0);
    EXPECT_EQ(out.udata, udata);
    EXPECT_EQ(Change(kq_, Ev(writer, EVFILT_EMPTY, EV_DELETE)), 0);
  };

  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  check(sv[0], sv[1], "AF_UNIX");
  close(sv[0]);
  close(sv[1]);

  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(ls, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(ls, reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(listen(ls, 1), 0);
  ASSERT_EQ(getsockname(ls, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(client, 0);
  if (connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    int server = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(server, 0);
    check(client, server, "TCP");
    close(server);
  } else {
    ASSERT_EQ(errno, ENETUNREACH) << strerror(errno);  // lo is down
  }
  close(client);
  close(ls);

  // Sockets only, as on FreeBSD and NetBSD.
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  EXPECT_EQ(Change(kq_, Ev(p[1], EVFILT_EMPTY, EV_ADD)), EINVAL);
  close(p[0]);
  close(p[1]);
}

// close() of the kqueue from another thread ends a call parked on it with
// EBADF, if the call named its descriptor (KQ_KEVENT_KQFD); a call that did
// not cannot be told apart and waits for its timeout (docs/abi.md).
TEST(DeviceClose, WakesParkedCallsThatNamedTheirDescriptor) {
  // CUSE's character device has no flush operation: the daemon never hears
  // of a close() while a parked ioctl holds the file (docs/abi.md).
  struct stat dev_st;
  if (stat(SharedDaemon().device().c_str(), &dev_st) == 0 && S_ISCHR(dev_st.st_mode))
    GTEST_SKIP() << "CUSE sends no FLUSH: close() cannot wake a parked call there";
  for (int round = 0; round < 10; round++) {
    int kq = SharedDaemon().OpenKqueue();
    ASSERT_GE(kq, 0);
    std::atomic<int> rc{0}, err{0};
    std::atomic<bool> done{false};
    std::thread waiter([&] {
      kq_kevent ev;
      kq_kevent_args a{};
      a.eventlist = reinterpret_cast<uint64_t>(&ev);
      a.nevents = 1;
      a.flags = KQ_KEVENT_KQFD;  // no timeout: waits forever
      a.kq_fd = kq;
      rc = ioctl(kq, KQ_IOC_KEVENT, &a);
      err = errno;
      done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
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

TEST(DeviceClose, UnnamedCallKeepsItsTimeout) {
  int kq = SharedDaemon().OpenKqueue();
  ASSERT_GE(kq, 0);
  std::atomic<int> rc{-2};
  auto start = Clock::now();
  std::thread waiter([&] {
    kq_kevent ev;
    rc = Kevent(kq, nullptr, 0, &ev, 1, 400);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(close(kq), 0);
  waiter.join();
  EXPECT_EQ(rc.load(), 0);
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(350));
}

}  // namespace
}  // namespace testing
}  // namespace kqd
