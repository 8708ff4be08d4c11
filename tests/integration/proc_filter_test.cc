// EVFILT_PROC at the ioctl level, against a private daemon, from the test
// process and from forked children (some of them switched to the user
// nobody): exit statuses, ESRCH, EACCES, NOTE_TRACK and NOTE_TRACKERR across
// a user switch.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/channel.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/raw_kevent.h"

namespace kqd {
namespace testing {
namespace {

using SteadyClock = std::chrono::steady_clock;

kq_kevent Watch(pid_t pid, uint32_t fflags, uint32_t flags = EV_ADD, uint64_t udata = 0) {
  kq_kevent e{};
  e.ident = static_cast<uint64_t>(pid);
  e.filter = EVFILT_PROC;
  e.flags = flags;
  e.fflags = fflags;
  e.udata = udata;
  return e;
}

// Collects events until `pid` reports its exit (EV_EOF) or 10 s pass.
std::vector<kq_kevent> CollectUntilExit(int kq, pid_t pid) {
  std::vector<kq_kevent> all;
  auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  while (SteadyClock::now() < deadline) {
    kq_kevent out[64];
    int n = Kevent(kq, nullptr, 0, out, 64, 200);
    for (int i = 0; i < n; i++) all.push_back(out[i]);
    for (int i = 0; i < n; i++)
      if (out[i].ident == static_cast<uint64_t>(pid) && (out[i].flags & EV_EOF)) return all;
  }
  return all;
}

using Channel = kqd::testing::Channel;

int WaitStatus(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

class ProcDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    kq_ = SharedDaemon().OpenKqueue();
    ASSERT_GE(kq_, 0) << strerror(errno);
    nobody_ = getpwnam("nobody");
  }
  void TearDown() override {
    if (kq_ >= 0) close(kq_);
    // Direct children only, and only those not reaped yet (a reaped pid
    // may already name another process).
    for (pid_t p : cleanup_) {
      if (waitpid(p, nullptr, WNOHANG) == 0) {
        kill(p, SIGKILL);
        waitpid(p, nullptr, 0);
      }
    }
  }
  // Becomes nobody (in a forked child): gid first, then uid.
  bool BecomeNobody() const {
    return nobody_ && setgid(nobody_->pw_gid) == 0 && setuid(nobody_->pw_uid) == 0;
  }
  int kq_ = -1;
  passwd* nobody_ = nullptr;
  std::vector<pid_t> cleanup_;
};

TEST_F(ProcDevice, ExitOfAForkedChildWithItsStatus) {
  Channel go;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    go.Receive();
    _exit(3);
  }
  cleanup_.push_back(child);
  ASSERT_EQ(Change(kq_, Watch(child, NOTE_EXIT, EV_ADD, 0xabc)), 0);
  go.Send(1);
  auto evs = CollectUntilExit(kq_, child);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].ident, static_cast<uint64_t>(child));
  EXPECT_EQ(evs[0].filter, EVFILT_PROC);
  EXPECT_EQ(evs[0].fflags, NOTE_EXIT);
  EXPECT_EQ(evs[0].data, 3 << 8);
  EXPECT_EQ(evs[0].udata, 0xabcu);
  EXPECT_EQ(evs[0].flags & (EV_EOF | EV_ONESHOT | EV_CLEAR), EV_EOF | EV_ONESHOT | EV_CLEAR);
  EXPECT_EQ(Change(kq_, Watch(child, 0, EV_DELETE)), ENOENT);
  EXPECT_EQ(WaitStatus(child), 3 << 8);
}

TEST_F(ProcDevice, ExitIsSeenByAKeventAfterWaitpid) {
  // Causality: once waitpid() has returned, a zero-timeout kevent reports
  // NOTE_EXIT with the status. (The proc connector's exit event can come
  // after the parent's wait returned; the pidfd is readable before.)
  for (int round = 0; round < 100; round++) {
    Channel go;
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      go.Receive();
      _exit(round % 100);
    }
    ASSERT_EQ(Change(kq_, Watch(child, NOTE_EXIT, EV_ADD, round)), 0);
    go.Send(1);
    ASSERT_EQ(WaitStatus(child), (round % 100) << 8);
    kq_kevent ev{};
    ASSERT_EQ(Kevent(kq_, nullptr, 0, &ev, 1, 0), 1) << "round " << round;
    EXPECT_EQ(ev.ident, static_cast<uint64_t>(child));
    EXPECT_EQ(ev.fflags, NOTE_EXIT);
    EXPECT_EQ(ev.data, (round % 100) << 8) << "round " << round;
    EXPECT_EQ(ev.udata, static_cast<uint64_t>(round));
  }
}

TEST_F(ProcDevice, SignalledChild) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  cleanup_.push_back(child);
  ASSERT_EQ(Change(kq_, Watch(child, NOTE_EXIT)), 0);
  kill(child, SIGTERM);
  auto evs = CollectUntilExit(kq_, child);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(WIFSIGNALED(evs[0].data));
  EXPECT_EQ(WTERMSIG(evs[0].data), SIGTERM);
  WaitStatus(child);
}

TEST_F(ProcDevice, GoneProcessIsEsrch) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  WaitStatus(child);
  EXPECT_EQ(Change(kq_, Watch(child, NOTE_EXIT)), ESRCH);
  // With room for it, the error comes back as an EV_ERROR record.
  kq_kevent change = Watch(child, NOTE_EXIT, EV_ADD, 5);
  kq_kevent out;
  ASSERT_EQ(Kevent(kq_, &change, 1, &out, 1, 0), 1);
  EXPECT_EQ(out.flags, EV_ERROR);
  EXPECT_EQ(out.data, ESRCH);
  EXPECT_EQ(out.udata, 5u);
}

TEST_F(ProcDevice, NobodyMayNotWatchInit) {
  if (!nobody_) GTEST_SKIP() << "no user nobody";
  pid_t w = fork();
  ASSERT_GE(w, 0);
  if (w == 0) {
    if (!BecomeNobody()) _exit(2);
    int kq = SharedDaemon().OpenKqueue();
    if (kq < 0) _exit(3);
    int err = Change(kq, Watch(1, NOTE_EXIT));
    _exit(err == EACCES ? 0 : err == 0 ? 4 : 5);
  }
  int status = WaitStatus(w);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(ProcDevice, NobodyWatchesItsOwnChild) {
  if (!nobody_) GTEST_SKIP() << "no user nobody";
  pid_t w = fork();
  ASSERT_GE(w, 0);
  if (w == 0) {
    if (!BecomeNobody()) _exit(2);
    int kq = SharedDaemon().OpenKqueue();
    if (kq < 0) _exit(3);
    int p[2];
    if (pipe(p) != 0) _exit(4);
    pid_t c = fork();
    if (c == 0) {
      char x;
      if (read(p[0], &x, 1) < 0) _exit(1);
      _exit(7);
    }
    if (Change(kq, Watch(c, NOTE_EXIT)) != 0) _exit(5);
    if (write(p[1], "x", 1) != 1) _exit(6);
    auto evs = CollectUntilExit(kq, c);
    if (evs.size() != 1 || evs[0].data != (7 << 8) || !(evs[0].flags & EV_EOF)) _exit(8);
    _exit(0);
  }
  int status = WaitStatus(w);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(ProcDevice, TrackReportsTheChildThenItsExit) {
  Channel go, report;
  pid_t parent = fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {
    go.Receive();
    pid_t c = fork();
    if (c == 0) _exit(5);
    report.Send(c);
    waitpid(c, nullptr, 0);
    _exit(0);
  }
  cleanup_.push_back(parent);
  ASSERT_EQ(Change(kq_, Watch(parent, NOTE_EXIT | NOTE_FORK | NOTE_TRACK, EV_ADD, 42)), 0);
  go.Send(1);
  pid_t child = report.Receive();
  ASSERT_GT(child, 0);
  auto evs = CollectUntilExit(kq_, parent);
  // The child's exit may come after the parent's: collect on to it.
  bool child_exited = false;
  for (const auto& e : evs)
    child_exited |= e.ident == static_cast<uint64_t>(child) && (e.flags & EV_EOF);
  if (!child_exited) {
    auto more = CollectUntilExit(kq_, child);
    evs.insert(evs.end(), more.begin(), more.end());
  }
  int child_notes = 0, child_exits = 0;
  uint32_t parent_fflags = 0;
  for (const auto& e : evs) {
    EXPECT_EQ(e.udata, 42u);
    if (e.ident == static_cast<uint64_t>(parent)) {
      parent_fflags |= e.fflags;
      continue;
    }
    ASSERT_EQ(e.ident, static_cast<uint64_t>(child));
    EXPECT_FALSE((e.fflags & NOTE_CHILD) && (e.flags & EV_EOF));
    if (e.fflags & NOTE_CHILD) {
      child_notes++;
      EXPECT_EQ(e.data, parent);
    }
    if (e.flags & EV_EOF) {
      child_exits++;
      EXPECT_EQ(e.data, 5 << 8);
      EXPECT_TRUE(e.fflags & NOTE_EXIT);
    }
  }
  EXPECT_EQ(child_notes, 1);
  EXPECT_EQ(child_exits, 1);
  EXPECT_EQ(parent_fflags, NOTE_EXIT | NOTE_FORK);
  WaitStatus(parent);
}

// NOTE_TRACK is authorised with the FORKING process's credentials (NetBSD's
// KAUTH_PROCESS_KEVENT_FILTER), not the watcher's: the watcher is nobody;
// the tracked process has real uid nobody (so nobody may watch it) but
// effective uid root, and before forking it becomes root entirely. A root
// forker may attach its child: nobody's knote gets NOTE_FORK, and the root
// child's knote its NOTE_CHILD (kill(2)'s rule, used before, refused it).
TEST_F(ProcDevice, TrackFollowsTheForkerAcrossAUserSwitch) {
  if (!nobody_) GTEST_SKIP() << "no user nobody";
  const uid_t nobody = nobody_->pw_uid;
  Channel p_ready, p_go, p_forked, w_registered, w_result;
  pid_t tracked = fork();
  ASSERT_GE(tracked, 0);
  if (tracked == 0) {
    if (setresuid(nobody, 0, 0) != 0) _exit(50);
    p_ready.Send(1);
    if (p_go.Receive() != 1) _exit(51);
    if (setresuid(0, 0, 0) != 0) _exit(52);
    pid_t c = fork();
    if (c == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the test
      pause();
      _exit(0);
    }
    p_forked.Send(c);
    pause();
    _exit(0);
  }
  cleanup_.push_back(tracked);
  ASSERT_EQ(p_ready.Receive(), 1);

  pid_t watcher = fork();
  ASSERT_GE(watcher, 0);
  if (watcher == 0) {
    if (!BecomeNobody()) _exit(2);
    int kq = SharedDaemon().OpenKqueue();
    if (kq < 0) _exit(3);
    int err = Change(kq, Watch(tracked, NOTE_FORK | NOTE_TRACK));
    w_registered.Send(err);
    if (err != 0) _exit(4);
    uint32_t fflags = 0, child_fflags = 0;
    int64_t child_data = 0;
    auto deadline = SteadyClock::now() + std::chrono::seconds(10);
    while (!((fflags & NOTE_FORK) && child_fflags) && SteadyClock::now() < deadline) {
      kq_kevent out[8];
      int n = Kevent(kq, nullptr, 0, out, 8, 200);
      for (int i = 0; i < n; i++) {
        if (out[i].ident == static_cast<uint64_t>(tracked)) {
          fflags |= out[i].fflags;
        } else {
          child_fflags |= out[i].fflags;
          child_data = out[i].data;
        }
      }
    }
    w_result.Send(static_cast<int32_t>(fflags));
    w_result.Send(static_cast<int32_t>(child_fflags));
    w_result.Send(static_cast<int32_t>(child_data));
    _exit(0);
  }
  cleanup_.push_back(watcher);
  ASSERT_EQ(w_registered.Receive(), 0) << "nobody may watch a process whose real uid is nobody";
  p_go.Send(1);
  pid_t child = p_forked.Receive();
  ASSERT_GT(child, 0);
  const int32_t fflags = w_result.Receive(15000);
  const int32_t child_fflags = w_result.Receive();
  const int32_t child_data = w_result.Receive();
  EXPECT_EQ(static_cast<uint32_t>(fflags), NOTE_FORK);
  EXPECT_EQ(static_cast<uint32_t>(child_fflags), NOTE_CHILD);
  EXPECT_EQ(child_data, tracked);
  int status = WaitStatus(watcher);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  kill(child, SIGKILL);
  kill(tracked, SIGKILL);
  WaitStatus(tracked);
}

// NOTE_TRACKERR for real: a set-id forker that is not root (real and
// effective uid nobody, saved uid root) may not have its child tracked —
// even by a root watcher, whose own rights do not matter (NetBSD:
// KAUTH_PROCESS_KEVENT_FILTER refuses a set-id target).
TEST_F(ProcDevice, SetIdForkerGetsTrackErrEvenForARootWatcher) {
  if (!nobody_) GTEST_SKIP() << "no user nobody";
  if (geteuid() != 0) GTEST_SKIP() << "needs root to make a set-id process";
  const uid_t nobody = nobody_->pw_uid;
  Channel p_ready, p_go, p_forked;
  pid_t tracked = fork();
  ASSERT_GE(tracked, 0);
  if (tracked == 0) {
    if (setresuid(nobody, nobody, 0) != 0) _exit(50);
    p_ready.Send(1);
    if (p_go.Receive() != 1) _exit(51);
    pid_t c = fork();
    if (c == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      pause();
      _exit(0);
    }
    p_forked.Send(c);
    pause();
    _exit(0);
  }
  cleanup_.push_back(tracked);
  ASSERT_EQ(p_ready.Receive(), 1);
  ASSERT_EQ(Change(kq_, Watch(tracked, NOTE_FORK | NOTE_TRACK)), 0);
  p_go.Send(1);
  const pid_t child = p_forked.Receive();
  ASSERT_GT(child, 0);
  uint32_t fflags = 0;
  int others = 0;
  auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  while (!(fflags & NOTE_TRACKERR) && SteadyClock::now() < deadline) {
    kq_kevent out[8];
    int n = Kevent(kq_, nullptr, 0, out, 8, 200);
    for (int i = 0; i < n; i++) {
      if (out[i].ident == static_cast<uint64_t>(tracked))
        fflags |= out[i].fflags;
      else
        others++;
    }
  }
  EXPECT_EQ(fflags, NOTE_FORK | NOTE_TRACKERR);
  EXPECT_EQ(others, 0);  // no knote, no NOTE_CHILD, for the set-id child
  kill(child, SIGKILL);
  kill(tracked, SIGKILL);
  WaitStatus(tracked);
}

// The kqueue is shared with a forked child (this project shares kqueues
// across fork): a knote registered by the parent on its own pid reports
// the child's fork and exit through either process.
TEST_F(ProcDevice, TrackingTheCallersOwnPid) {
  const pid_t self = getpid();
  ASSERT_EQ(Change(kq_, Watch(self, NOTE_FORK | NOTE_TRACK)), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(12);
  cleanup_.push_back(child);
  auto evs = CollectUntilExit(kq_, child);
  bool fork_seen = false, child_seen = false, exit_seen = false;
  for (const auto& e : evs) {
    if (e.ident == static_cast<uint64_t>(self)) fork_seen |= (e.fflags & NOTE_FORK) != 0;
    if (e.ident == static_cast<uint64_t>(child)) {
      if (e.fflags & NOTE_CHILD) {
        child_seen = true;
        EXPECT_EQ(e.data, self);
      }
      if (e.flags & EV_EOF) {
        exit_seen = true;
        EXPECT_EQ(e.data, 12 << 8);
      }
    }
  }
  EXPECT_TRUE(fork_seen);
  EXPECT_TRUE(child_seen);
  EXPECT_TRUE(exit_seen);
  EXPECT_EQ(Change(kq_, Watch(self, 0, EV_DELETE)), 0);
  WaitStatus(child);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
