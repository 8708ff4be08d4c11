// EVFILT_PROC through the core, the test process as the registering one:
// exit statuses, NOTE_FORK / NOTE_EXEC, NOTE_TRACK trees, NOTE_TRACKERR,
// permissions, and the proc connector's overflow path.
//
// Needs real, global pids and the proc connector, which the kernel serves
// only to the initial user and pid namespaces: the target is tagged local
// (Bazel's sandbox runs tests in their own namespaces).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "daemon/core/user_limits.h"
#include "daemon/filters/proc/proc_events.h"
#include "daemon/filters/proc/proc_filter.h"
#include "daemon/filters/proc/proc_info.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/channel.h"
#include "tests/support/core_test_support.h"

namespace {

using kqd::ProcEvents;
using kqd::testing::Ev;
using kqd::testing::LocalProcess;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;
using SteadyClock = std::chrono::steady_clock;

constexpr uid_t kNobody = 65534;

// ThreadSanitizer kills a forked child of a multithreaded process that
// starts a thread: the cases whose child needs threads skip under it.
#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadsAfterForkWork = false;
#else
constexpr bool kThreadsAfterForkWork = true;
#endif
constexpr long kWaitMs = 10000;

// A forked child that waits at a gate until Release(), then runs `body` and
// _exits with its result. Killed and reaped on destruction if still there.
// The gate is released by writing a byte, not by closing: other children
// forked meanwhile inherit the write end, so a close would not be seen.
class Proc {
 public:
  explicit Proc(std::function<int()> body) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) abort();
    pid_ = fork();
    if (pid_ < 0) abort();
    if (pid_ == 0) {
      close(p[1]);
      char c;
      while (read(p[0], &c, 1) < 0 && errno == EINTR) {
      }
      _exit(body());
    }
    close(p[0]);
    gate_ = p[1];
  }
  ~Proc() {
    if (gate_ >= 0) close(gate_);
    if (!reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Proc(const Proc&) = delete;
  Proc& operator=(const Proc&) = delete;

  pid_t pid() const { return pid_; }
  void Release() {
    char c = 1;
    if (write(gate_, &c, 1) != 1) abort();
  }
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int gate_ = -1;
  bool reaped_ = false;
};

using Channel = kqd::testing::Channel;

// Kills the processes it is given when the test ends, however it ends
// (children that pause() would otherwise outlive a failed assertion).
class Killer {
 public:
  ~Killer() {
    for (pid_t p : pids_) kill(p, SIGKILL);
  }
  void Add(pid_t p) {
    if (p > 0) pids_.push_back(p);
  }

 private:
  std::vector<pid_t> pids_;
};

kq_kevent Watch(pid_t pid, uint32_t fflags, uint32_t flags = EV_ADD, uint64_t udata = 0) {
  return Ev(static_cast<uint64_t>(pid), EVFILT_PROC, flags, fflags, 0, udata);
}

bool IsExit(const kq_kevent& ev) { return (ev.flags & EV_EOF) != 0; }

// Collects events until `done` says so or `timeout_ms` passes.
std::vector<kq_kevent> CollectUntil(TestQueue& q,
                                    const std::function<bool(const std::vector<kq_kevent>&)>& done,
                                    long timeout_ms = kWaitMs) {
  std::vector<kq_kevent> all;
  auto deadline = SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done(all) && SteadyClock::now() < deadline) {
    for (const kq_kevent& ev : q.Collect(256, 100)) all.push_back(ev);
  }
  return all;
}

// Collects until `pid` has reported its exit.
std::vector<kq_kevent> CollectUntilExit(TestQueue& q, pid_t pid, long timeout_ms = kWaitMs) {
  return CollectUntil(
      q,
      [pid](const std::vector<kq_kevent>& evs) {
        for (const auto& e : evs)
          if (e.ident == static_cast<uint64_t>(pid) && IsExit(e)) return true;
        return false;
      },
      timeout_ms);
}

const kq_kevent* ExitOf(const std::vector<kq_kevent>& evs, pid_t pid) {
  for (const auto& e : evs)
    if (e.ident == static_cast<uint64_t>(pid) && IsExit(e)) return &e;
  return nullptr;
}

uint32_t FflagsOf(const std::vector<kq_kevent>& evs, pid_t pid) {
  uint32_t f = 0;
  for (const auto& e : evs)
    if (e.ident == static_cast<uint64_t>(pid)) f |= e.fflags;
  return f;
}

// The test process as seen by an unprivileged user: no CAP_KILL.
class NobodyProcess : public LocalProcess {
 public:
  uid_t ruid() const override { return kNobody; }
  uid_t euid() const override { return kNobody; }
  bool can_kill_any() const override { return false; }
};

// Forks `n` children that exit at once, and reaps them: a burst of 2n
// connector events.
void ForkBurst(int n) {
  for (int i = 0; i < n; i++) {
    pid_t p = fork();
    if (p == 0) _exit(0);
    waitpid(p, nullptr, 0);
  }
}

class ProcFilter : public ::testing::Test {
 protected:
  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_ = rt_.NewQueue();
};

TEST_F(ProcFilter, ExitReportsWaitStatusEofAndOneshot) {
  Proc child([] { return 3; });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXIT, EV_ADD, 77)), 0);
  EXPECT_TRUE(q_->Collect(4, 0).empty());
  child.Release();
  auto evs = CollectUntilExit(*q_, child.pid());
  ASSERT_EQ(evs.size(), 1u);
  const kq_kevent& ev = evs[0];
  EXPECT_EQ(ev.ident, static_cast<uint64_t>(child.pid()));
  EXPECT_EQ(ev.filter, EVFILT_PROC);
  EXPECT_EQ(ev.fflags, NOTE_EXIT);
  EXPECT_EQ(ev.data, 3 << 8);
  EXPECT_TRUE(WIFEXITED(ev.data));
  EXPECT_EQ(WEXITSTATUS(ev.data), 3);
  EXPECT_EQ(ev.flags & (EV_EOF | EV_ONESHOT | EV_CLEAR | EV_ADD),
            EV_EOF | EV_ONESHOT | EV_CLEAR | EV_ADD);
  EXPECT_EQ(ev.udata, 77u);
  // One shot: the knote is gone.
  EXPECT_EQ(q_->Change(Watch(child.pid(), 0, EV_DELETE)), ENOENT);
  EXPECT_EQ(child.Wait(), 3 << 8);
}

TEST_F(ProcFilter, ExitIsReportedEvenIfNotAskedFor) {
  Proc child([] { return 0; });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_FORK)), 0);
  child.Release();
  auto evs = CollectUntilExit(*q_, child.pid());
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0u);  // NetBSD: NOTE_EXIT only if requested
  EXPECT_TRUE(evs[0].flags & EV_EOF);
  EXPECT_TRUE(evs[0].flags & EV_ONESHOT);
  EXPECT_EQ(evs[0].data, 0);
}

TEST_F(ProcFilter, SignalDeathStatus) {
  Proc child([] {
    pause();
    return 0;
  });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXIT)), 0);
  ASSERT_EQ(kill(child.pid(), SIGKILL), 0);
  auto evs = CollectUntilExit(*q_, child.pid());
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(WIFSIGNALED(evs[0].data));
  EXPECT_EQ(WTERMSIG(evs[0].data), SIGKILL);
}

// NetBSD's regression scenario: a watched process forks, then execs
// /bin/true: FORK, EXEC and EXIT are all seen.
TEST_F(ProcFilter, ForkExecExit) {
  Proc child([] {
    pid_t g = fork();
    if (g == 0) _exit(0);
    waitpid(g, nullptr, 0);
    execl("/bin/true", "true", static_cast<char*>(nullptr));
    return 127;
  });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXIT | NOTE_FORK | NOTE_EXEC)), 0);
  child.Release();
  auto evs = CollectUntilExit(*q_, child.pid());
  EXPECT_EQ(FflagsOf(evs, child.pid()), NOTE_EXIT | NOTE_FORK | NOTE_EXEC);
  const kq_kevent* exit = ExitOf(evs, child.pid());
  ASSERT_NE(exit, nullptr);
  EXPECT_EQ(exit->data, 0);
  // Nothing but this process was watched: no NOTE_CHILD, no other ident.
  for (const auto& e : evs) EXPECT_EQ(e.ident, static_cast<uint64_t>(child.pid()));
}

TEST_F(ProcFilter, EventsOnlyForWhatWasAsked) {
  Proc child([] {
    pid_t g = fork();
    if (g == 0) _exit(0);
    waitpid(g, nullptr, 0);
    execl("/bin/true", "true", static_cast<char*>(nullptr));
    return 127;
  });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXEC)), 0);
  child.Release();
  auto evs = CollectUntilExit(*q_, child.pid());
  EXPECT_EQ(FflagsOf(evs, child.pid()), NOTE_EXEC);
}

// An exec by a thread other than the leader is the process's (the kernel
// gives the thread the leader's pid).
TEST_F(ProcFilter, ExecByANonLeaderThread) {
  if (!kThreadsAfterForkWork) GTEST_SKIP() << "threads in a forked child (TSan)";
  Proc child([] {
    std::thread t([] { execl("/bin/true", "true", static_cast<char*>(nullptr)); });
    t.join();  // not reached: the exec replaces the whole process
    return 127;
  });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXEC | NOTE_EXIT | NOTE_FORK)), 0);
  child.Release();
  auto evs = CollectUntilExit(*q_, child.pid());
  // No NOTE_FORK: the thread was not a fork.
  EXPECT_EQ(FflagsOf(evs, child.pid()), NOTE_EXEC | NOTE_EXIT);
  ASSERT_NE(ExitOf(evs, child.pid()), nullptr);
  EXPECT_EQ(ExitOf(evs, child.pid())->data, 0);
}

// The leader thread's exit is not the process's: the exit is reported when
// the last thread goes, with the process's status.
TEST_F(ProcFilter, LeaderThreadExitIsNotTheProcessExit) {
  if (!kThreadsAfterForkWork) GTEST_SKIP() << "threads in a forked child (TSan)";
  Channel leader_gone;
  Proc child([&] {
    std::thread([&] {
      usleep(300000);
      leader_gone.Send(1);
      usleep(200000);
      _exit(4);  // exit_group: every thread gets status 4 << 8
    }).detach();
    // The leader thread alone ends (the raw exit, not exit_group; not
    // pthread_exit, whose unwinding would run into gtest's frames).
    syscall(SYS_exit, 0);
    return 0;
  });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXIT)), 0);
  child.Release();
  ASSERT_EQ(leader_gone.Receive(), 1);
  EXPECT_TRUE(q_->Collect(4, 100).empty());  // only the leader has exited
  auto evs = CollectUntilExit(*q_, child.pid());
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 4 << 8);
  EXPECT_EQ(child.Wait(), 4 << 8);
}

TEST_F(ProcFilter, NoSuchProcessIsEsrch) {
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  waitpid(gone, nullptr, 0);
  EXPECT_EQ(q_->Change(Watch(gone, NOTE_EXIT)), ESRCH);
  EXPECT_EQ(q_->Change(Ev(0, EVFILT_PROC, EV_ADD, NOTE_EXIT)), ESRCH);
  EXPECT_EQ(q_->Change(Ev(1ull << 40, EVFILT_PROC, EV_ADD, NOTE_EXIT)), ESRCH);
  // A thread id is not a process.
  std::promise<pid_t> tid;
  std::promise<void> stop;
  std::thread t([&] {
    tid.set_value(static_cast<pid_t>(syscall(SYS_gettid)));
    stop.get_future().wait();
  });
  EXPECT_EQ(q_->Change(Watch(tid.get_future().get(), NOTE_EXIT)), ESRCH);
  stop.set_value();
  t.join();
}

TEST_F(ProcFilter, UnprivilegedOwnerNeedsKillPermission) {
  TestQueue q(rt_.get(), std::make_shared<NobodyProcess>());
  EXPECT_EQ(q.Change(Watch(1, NOTE_EXIT)), EACCES);  // init is root's
  // A process whose real uid is nobody may be watched by nobody, although
  // its effective uid is root (kill(2)'s rule).
  Channel ready;
  Proc child([&] {
    if (setresuid(kNobody, 0, 0) != 0) return 50;
    ready.Send(1);
    pause();
    return 0;
  });
  child.Release();
  ASSERT_EQ(ready.Receive(), 1);
  EXPECT_EQ(q.Change(Watch(child.pid(), NOTE_EXIT)), 0);
  // ... and one whose saved set-user-ID is nobody.
  Channel ready2;
  Proc saved([&] {
    if (setresuid(0, 0, kNobody) != 0) return 50;
    ready2.Send(1);
    pause();
    return 0;
  });
  saved.Release();
  ASSERT_EQ(ready2.Receive(), 1);
  EXPECT_EQ(q.Change(Watch(saved.pid(), NOTE_EXIT)), 0);
  kill(child.pid(), SIGKILL);
  auto evs = CollectUntilExit(q, child.pid());
  ASSERT_NE(ExitOf(evs, child.pid()), nullptr);
}

TEST_F(ProcFilter, TrackTreeReportsEachChildAndExitOnce) {
  constexpr int kChildren = 10, kGrandchildren = 10;
  Proc root([] {
    std::vector<pid_t> kids;
    for (int i = 0; i < kChildren; i++) {
      pid_t c = fork();
      if (c == 0) {
        std::vector<pid_t> grand;
        for (int j = 0; j < kGrandchildren; j++) {
          pid_t g = fork();
          if (g == 0) _exit(j);
          grand.push_back(g);
        }
        // Half the children reap their own children, half leave them to
        // be reparented: both paths must be seen.
        if (i % 2 == 0)
          for (pid_t g : grand) waitpid(g, nullptr, 0);
        _exit(i);
      }
      kids.push_back(c);
    }
    for (pid_t c : kids) waitpid(c, nullptr, 0);
    return 0;
  });
  ASSERT_EQ(q_->Change(Watch(root.pid(), NOTE_EXIT | NOTE_FORK | NOTE_TRACK)), 0);
  root.Release();
  constexpr size_t kAll = 1 + kChildren + kChildren * kGrandchildren;
  auto evs = CollectUntil(
      *q_,
      [&](const std::vector<kq_kevent>& all) {
        size_t exits = 0;
        for (const auto& e : all) exits += IsExit(e);
        return exits >= kAll;
      },
      30000);
  root.Wait();

  std::map<pid_t, pid_t> parent_of;  // from NOTE_CHILD
  std::map<pid_t, int> child_events, exit_events;
  for (const auto& e : evs) {
    const pid_t pid = static_cast<pid_t>(e.ident);
    EXPECT_FALSE((e.fflags & NOTE_CHILD) && IsExit(e)) << "merged NOTE_CHILD and exit for " << pid;
    EXPECT_FALSE(e.fflags & NOTE_TRACKERR) << pid;
    if (e.fflags & NOTE_CHILD) {
      child_events[pid]++;
      parent_of[pid] = static_cast<pid_t>(e.data);
    }
    if (IsExit(e)) {
      exit_events[pid]++;
      EXPECT_TRUE(e.fflags & NOTE_EXIT) << pid;
    }
  }
  EXPECT_EQ(child_events.size(), kAll - 1);
  EXPECT_EQ(exit_events.size(), kAll);
  for (const auto& [pid, n] : child_events) EXPECT_EQ(n, 1) << pid;
  for (const auto& [pid, n] : exit_events) EXPECT_EQ(n, 1) << pid;
  // The shape: 10 children of the root, each the parent of 10.
  std::map<pid_t, int> fanout;
  for (const auto& [pid, parent] : parent_of) fanout[parent]++;
  EXPECT_EQ(fanout[root.pid()], kChildren);
  int parents_of_ten = 0;
  for (const auto& [parent, n] : fanout) {
    if (parent == root.pid()) continue;
    EXPECT_EQ(parent_of.count(parent), 1u) << "unknown parent " << parent;
    parents_of_ten += n == kGrandchildren;
  }
  EXPECT_EQ(parents_of_ten, kChildren);
  // Every child exited with its index (grandchildren: theirs), data being
  // a wait status.
  for (const auto& e : evs) {
    if (IsExit(e) && static_cast<pid_t>(e.ident) != root.pid()) {
      EXPECT_TRUE(WIFEXITED(e.data));
      EXPECT_LT(WEXITSTATUS(e.data), 10);
    }
  }
}

TEST_F(ProcFilter, ChildExitBeforeNoteChildIsRetrievedComesSeparately) {
  Channel report;
  Proc parent([&] {
    pid_t c = fork();
    if (c == 0) _exit(4);
    report.Send(c);
    pause();
    return 0;
  });
  ASSERT_EQ(q_->Change(Watch(parent.pid(), NOTE_EXIT | NOTE_TRACK)), 0);
  parent.Release();
  pid_t child = report.Receive();
  ASSERT_GT(child, 0);
  // Let the child exit (a zombie: its parent does not reap) before anything
  // is retrieved.
  for (int i = 0; i < 200; i++) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", child);
    FILE* f = fopen(path, "r");
    char state = '?';
    if (f) {
      if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1) state = '?';
      fclose(f);
    }
    if (state == 'Z') break;
    usleep(5000);
  }
  usleep(100000);
  auto first = q_->Collect(16, 1000);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].ident, static_cast<uint64_t>(child));
  EXPECT_EQ(first[0].fflags, NOTE_CHILD);
  EXPECT_EQ(first[0].data, parent.pid());
  EXPECT_FALSE(IsExit(first[0]));
  auto rest = CollectUntilExit(*q_, child);
  const kq_kevent* exit = ExitOf(rest, child);
  ASSERT_NE(exit, nullptr);
  EXPECT_EQ(exit->fflags, NOTE_EXIT);
  EXPECT_EQ(exit->data, 4 << 8);
  EXPECT_EQ(q_->Change(Watch(child, 0, EV_DELETE)), ENOENT);
}

TEST_F(ProcFilter, TrackingOwnPid) {
  const pid_t self = getpid();
  ASSERT_EQ(q_->Change(Watch(self, NOTE_FORK | NOTE_EXIT | NOTE_TRACK, EV_ADD, 9)), 0);
  // A thread is not a fork.
  std::thread([] {}).join();
  EXPECT_TRUE(q_->Collect(8, 200).empty());
  pid_t child = fork();
  if (child == 0) _exit(6);
  auto evs = CollectUntilExit(*q_, child);
  int status;
  waitpid(child, &status, 0);
  bool saw_fork = false, saw_child = false;
  for (const auto& e : evs) {
    if (e.ident == static_cast<uint64_t>(self)) {
      EXPECT_EQ(e.fflags, NOTE_FORK);
      EXPECT_FALSE(IsExit(e));
      saw_fork = true;
    } else {
      ASSERT_EQ(e.ident, static_cast<uint64_t>(child));
      EXPECT_EQ(e.udata, 9u);  // inherited from the parent's knote
      if (e.fflags & NOTE_CHILD) {
        EXPECT_EQ(e.data, self);
        saw_child = true;
      }
    }
  }
  EXPECT_TRUE(saw_fork);
  EXPECT_TRUE(saw_child);
  const kq_kevent* exit = ExitOf(evs, child);
  ASSERT_NE(exit, nullptr);
  EXPECT_EQ(exit->data, 6 << 8);
  EXPECT_EQ(q_->Change(Watch(self, 0, EV_DELETE)), 0);
}

TEST_F(ProcFilter, ExitOfANonChildIsSeen) {
  // The test watches a grandchild whose parent has already died.
  Channel report;
  Proc middle([&] {
    const pid_t me = getpid();
    pid_t g = fork();
    if (g == 0) {
      // Exit 6 once orphaned (reparented away from the middle process).
      while (getppid() == me) usleep(1000);
      usleep(100000);
      _exit(6);
    }
    report.Send(g);
    return 0;
  });
  middle.Release();
  pid_t grandchild = report.Receive();
  ASSERT_GT(grandchild, 0);
  ASSERT_EQ(q_->Change(Watch(grandchild, NOTE_EXIT)), 0);
  middle.Wait();
  auto evs = CollectUntilExit(*q_, grandchild);
  const kq_kevent* exit = ExitOf(evs, grandchild);
  ASSERT_NE(exit, nullptr);
  EXPECT_EQ(exit->data, 6 << 8);
}

TEST_F(ProcFilter, TwoKqueuesWatchOneProcess) {
  auto q2 = rt_.NewQueue();
  Proc child([] { return 2; });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXIT)), 0);
  ASSERT_EQ(q2->Change(Watch(child.pid(), NOTE_EXIT)), 0);
  auto q3 = rt_.NewQueue();
  ASSERT_EQ(q3->Change(Watch(child.pid(), NOTE_EXIT)), 0);
  ASSERT_EQ(q3->Change(Watch(child.pid(), 0, EV_DELETE)), 0);
  child.Release();
  EXPECT_EQ(ExitOf(CollectUntilExit(*q_, child.pid()), child.pid())->data, 2 << 8);
  EXPECT_EQ(ExitOf(CollectUntilExit(*q2, child.pid()), child.pid())->data, 2 << 8);
  EXPECT_TRUE(q3->Collect(4, 100).empty());
}

TEST_F(ProcFilter, ZombieIsReportedAtOnce) {
  Proc child([] { return 8; });
  child.Release();
  // Wait until it is a zombie (not reaped: the test is its parent).
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PID, child.pid(), &info, WEXITED | WNOWAIT), 0);
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXIT)), 0);
  auto evs = CollectUntilExit(*q_, child.pid());
  const kq_kevent* exit = ExitOf(evs, child.pid());
  ASSERT_NE(exit, nullptr);
  EXPECT_EQ(exit->data, 8 << 8);
}

TEST_F(ProcFilter, DisabledKnoteKeepsItsExit) {
  Proc child([] { return 1; });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXIT, EV_ADD | EV_DISABLE)), 0);
  child.Release();
  child.Wait();
  EXPECT_TRUE(q_->Collect(4, 300).empty());
  ASSERT_EQ(q_->Change(Watch(child.pid(), 0, EV_ENABLE)), 0);
  auto evs = CollectUntilExit(*q_, child.pid());
  ASSERT_NE(ExitOf(evs, child.pid()), nullptr);
  EXPECT_EQ(ExitOf(evs, child.pid())->data, 1 << 8);
}

TEST(ProcFilterLimits, TrackErrAtTheKnoteLimit) {
  kqd::LimitConfig limits;
  limits.knotes = 2;  // the parent's and one child's
  TestRuntime rt(limits);
  auto q = rt.NewQueue();
  Channel forked;
  Proc parent([&] {
    for (int i = 0; i < 2; i++) {
      pid_t c = fork();
      if (c == 0) {
        pause();
        _exit(0);
      }
      forked.Send(c);
    }
    pause();
    return 0;
  });
  ASSERT_EQ(q->Change(Watch(parent.pid(), NOTE_FORK | NOTE_TRACK)), 0);
  parent.Release();
  Killer killer;
  pid_t c1 = forked.Receive(), c2 = forked.Receive();
  killer.Add(c1);
  killer.Add(c2);
  ASSERT_GT(c1, 0);
  ASSERT_GT(c2, 0);
  auto evs = CollectUntil(*q, [&](const std::vector<kq_kevent>& all) {
    return (FflagsOf(all, parent.pid()) & NOTE_TRACKERR) != 0;
  });
  EXPECT_EQ(FflagsOf(evs, parent.pid()), NOTE_FORK | NOTE_TRACKERR);
  std::vector<uint64_t> children;
  for (const auto& e : evs)
    if (e.fflags & NOTE_CHILD) children.push_back(e.ident);
  ASSERT_EQ(children.size(), 1u);
  EXPECT_EQ(children[0], static_cast<uint64_t>(c1));  // the first fits, the second not
}

// NetBSD's rule at fork time (KAUTH_PROCESS_KEVENT_FILTER with the forking
// process's credentials): a forker that is set-id (saved uid root, real and
// effective uid nobody) and not root may not have its child tracked.
TEST(ProcFilterCreds, TrackErrWhenTheForkerIsSetId) {
  TestRuntime rt;
  TestQueue q(rt.get(), std::make_shared<NobodyProcess>());
  Channel ready, go, forked;
  Proc parent([&] {
    // Watchable by nobody (real uid nobody), set-id (saved uid root).
    if (setresuid(kNobody, kNobody, 0) != 0) return 50;
    ready.Send(1);
    if (go.Receive() != 1) return 52;
    pid_t c = fork();
    if (c == 0) {
      pause();  // stays: a reaped child could not be checked at all
      _exit(0);
    }
    forked.Send(c);
    pause();
    return 0;
  });
  parent.Release();
  ASSERT_EQ(ready.Receive(), 1);
  ASSERT_EQ(q.Change(Watch(parent.pid(), NOTE_FORK | NOTE_TRACK)), 0);
  go.Send(1);
  Killer killer;
  pid_t child = forked.Receive();
  killer.Add(child);
  ASSERT_GT(child, 0);
  auto evs = CollectUntil(q, [&](const std::vector<kq_kevent>& all) {
    return (FflagsOf(all, parent.pid()) & NOTE_TRACKERR) != 0;
  });
  EXPECT_EQ(FflagsOf(evs, parent.pid()), NOTE_FORK | NOTE_TRACKERR);
  for (const auto& e : evs) EXPECT_EQ(e.ident, static_cast<uint64_t>(parent.pid()));
}

// NetBSD's t_proc2: root watches a child with NOTE_FORK|NOTE_TRACK; the
// child does setuid(nobody) — after which every uid is equal and /proc shows
// nothing set-id — then forks, and both exit at once. NetBSD marks any id
// change (PK_SUGID, inherited by fork), and the forker is not root: the
// grandchild is not tracked (NOTE_TRACKERR, no NOTE_CHILD).
TEST_F(ProcFilter, TrackErrAfterTheForkerChangedIds) {
  Proc child([] {
    if (setuid(kNobody) != 0) return 50;
    pid_t c = fork();
    if (c < 0) return 51;
    if (c == 0) _exit(0);
    return 0;
  });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_FORK | NOTE_TRACK)), 0);
  child.Release();
  auto evs = CollectUntil(*q_, [&](const std::vector<kq_kevent>& all) {
    return (FflagsOf(all, child.pid()) & NOTE_FORK) != 0;
  });
  // A NOTE_CHILD would have come first; give a late one time all the same.
  for (const kq_kevent& ev : q_->Collect(256, 500)) evs.push_back(ev);
  EXPECT_EQ(FflagsOf(evs, child.pid()) & (NOTE_FORK | NOTE_TRACKERR), NOTE_FORK | NOTE_TRACKERR);
  for (const auto& e : evs) {
    EXPECT_FALSE(e.fflags & NOTE_CHILD) << e.ident;
    EXPECT_EQ(e.ident, static_cast<uint64_t>(child.pid()));
  }
}

// A process that changed ids and then exec'd a plain program with equal
// real and effective ids is no longer set-id (NetBSD's exec clears
// PK_SUGID): the child that program forks (as nobody) is tracked.
TEST_F(ProcFilter, ExecWithEqualIdsClearsTheChangedIdsMark) {
  Proc child([] {
    if (setgid(kNobody) != 0) return 49;
    if (setuid(kNobody) != 0) return 50;
    execl("/bin/sh", "sh", "-c", "/bin/true & wait", static_cast<char*>(nullptr));
    return 52;
  });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_FORK | NOTE_TRACK)), 0);
  child.Release();
  auto evs = CollectUntil(*q_, [&](const std::vector<kq_kevent>& all) {
    return (FflagsOf(all, child.pid()) & NOTE_FORK) != 0;
  });
  EXPECT_EQ(FflagsOf(evs, child.pid()) & (NOTE_FORK | NOTE_TRACKERR), NOTE_FORK);
  bool tracked = false;
  for (const auto& e : evs) tracked |= (e.fflags & NOTE_CHILD) != 0;
  EXPECT_TRUE(tracked);
}

// ---- With a ProcEvents of the test's own, to pause it and overflow it ----

class ProcFilterConnector : public ::testing::Test {
 protected:
  void SetUp() override {
    int err = 0;
    events_ = ProcEvents::Create(&rt_.get()->reactor(), &err);
    if (!events_) GTEST_SKIP() << "no proc connector: " << strerror(err);
    rt_.get()->filters().AddSystem(EVFILT_PROC, "EVFILT_PROC",
                                   kqd::MakeProcFilter(rt_.get(), events_));
    q_ = rt_.NewQueue();
  }
  void TearDown() override {
    if (events_) events_->PauseForTesting(false);
  }
  TestRuntime rt_;
  std::shared_ptr<ProcEvents> events_;
  std::unique_ptr<TestQueue> q_;
};

// A tracked child reaped before its fork event was handled: it is tracked
// without a pidfd, and its exit (status included) comes from the stream.
TEST_F(ProcFilterConnector, ChildReapedBeforeItsForkIsHandled) {
  Channel report;
  Proc parent([&] {
    pid_t c = fork();
    if (c == 0) _exit(9);
    waitpid(c, nullptr, 0);
    report.Send(c);
    pause();
    return 0;
  });
  ASSERT_EQ(q_->Change(Watch(parent.pid(), NOTE_EXIT | NOTE_TRACK)), 0);
  events_->PauseForTesting(true);
  parent.Release();
  pid_t child = report.Receive();
  ASSERT_GT(child, 0);
  events_->PauseForTesting(false);
  auto evs = CollectUntilExit(*q_, child);
  ASSERT_GE(evs.size(), 2u);
  EXPECT_EQ(evs[0].ident, static_cast<uint64_t>(child));
  EXPECT_EQ(evs[0].fflags, NOTE_CHILD);
  EXPECT_EQ(evs[0].data, parent.pid());
  const kq_kevent* exit = ExitOf(evs, child);
  ASSERT_NE(exit, nullptr);
  EXPECT_EQ(exit->fflags, NOTE_EXIT);
  EXPECT_EQ(exit->data, 9 << 8);
}

// The kernel drops events (a real ENOBUFS: a tiny buffer, not read): an
// exit is still reported, with its status, through the pidfd and /proc.
TEST_F(ProcFilterConnector, ExitLostToOverflowIsStillReported) {
  Proc child([] { return 5; });
  ASSERT_EQ(q_->Change(Watch(child.pid(), NOTE_EXIT)), 0);
  ASSERT_EQ(events_->SetReceiveBufferForTesting(1), 0);
  events_->PauseForTesting(true);
  const uint64_t before = events_->overflows();
  ForkBurst(64);  // fills the buffer: what follows is lost
  child.Release();
  auto evs = CollectUntilExit(*q_, child.pid());
  const kq_kevent* exit = ExitOf(evs, child.pid());
  ASSERT_NE(exit, nullptr);
  EXPECT_EQ(exit->data, 5 << 8);
  events_->PauseForTesting(false);
  ASSERT_EQ(events_->SetReceiveBufferForTesting(8 << 20), 0);
  EXPECT_GT(events_->overflows(), before);
  EXPECT_EQ(evs.size(), 1u);
  EXPECT_TRUE(q_->Collect(4, 200).empty());  // no second report
}

// Forks lost to an overflow are found by listing children: each missed
// child gets its NOTE_CHILD (and the parent its NOTE_FORK), then its exit.
TEST_F(ProcFilterConnector, ForksLostToOverflowAreResynchronised) {
  Channel report;
  Proc parent([&] {
    // The children wait for the parent to die (their end of `gate` then
    // reads EOF) and exit with 20, 21, 22.
    int gate[2];
    if (pipe(gate) != 0) return 50;
    for (int i = 0; i < 3; i++) {
      pid_t c = fork();
      if (c == 0) {
        close(gate[1]);
        char x;
        while (read(gate[0], &x, 1) < 0 && errno == EINTR) {
        }
        _exit(20 + i);
      }
      report.Send(c);
    }
    close(gate[0]);
    pause();
    return 0;
  });
  ASSERT_EQ(q_->Change(Watch(parent.pid(), NOTE_EXIT | NOTE_FORK | NOTE_TRACK)), 0);
  ASSERT_EQ(events_->SetReceiveBufferForTesting(1), 0);
  events_->PauseForTesting(true);
  const uint64_t before = events_->overflows();
  ForkBurst(64);  // fills the buffer: the forks that follow are lost
  parent.Release();
  std::set<pid_t> children;
  for (int i = 0; i < 3; i++) children.insert(report.Receive());
  ASSERT_EQ(children.count(-1), 0u);
  events_->PauseForTesting(false);
  ASSERT_EQ(events_->SetReceiveBufferForTesting(8 << 20), 0);
  ASSERT_GT(events_->overflows(), before);
  auto evs = CollectUntil(*q_, [&](const std::vector<kq_kevent>& all) {
    int n = 0;
    for (const auto& e : all) n += (e.fflags & NOTE_CHILD) != 0;
    return n >= 3;
  });
  std::map<pid_t, int> seen;
  for (const auto& e : evs) {
    if (e.fflags & NOTE_CHILD) {
      seen[static_cast<pid_t>(e.ident)]++;
      EXPECT_EQ(e.data, parent.pid());
    }
  }
  EXPECT_EQ(seen.size(), 3u);
  for (pid_t c : children) EXPECT_EQ(seen[c], 1) << c;
  EXPECT_TRUE(FflagsOf(evs, parent.pid()) & NOTE_FORK);

  // The parent dies; the children follow. Each exit once, with its status.
  ASSERT_EQ(kill(parent.pid(), SIGKILL), 0);
  auto exits = CollectUntil(*q_, [&](const std::vector<kq_kevent>& all) {
    if (!ExitOf(all, parent.pid())) return false;
    for (pid_t c : children)
      if (!ExitOf(all, c)) return false;
    return true;
  });
  const kq_kevent* pexit = ExitOf(exits, parent.pid());
  ASSERT_NE(pexit, nullptr);
  EXPECT_TRUE(WIFSIGNALED(pexit->data));
  std::set<int64_t> statuses;
  std::map<uint64_t, int> count;
  for (const auto& e : exits) {
    EXPECT_FALSE(e.fflags & NOTE_CHILD);
    if (IsExit(e)) count[e.ident]++;
  }
  for (pid_t c : children) {
    const kq_kevent* ce = ExitOf(exits, c);
    ASSERT_NE(ce, nullptr);
    statuses.insert(ce->data);
    EXPECT_EQ(count[static_cast<uint64_t>(c)], 1);
  }
  EXPECT_EQ(statuses, (std::set<int64_t>{20 << 8, 21 << 8, 22 << 8}));
}

// An overflow that lost nothing must not report anything again, nor take
// a child that existed before the registration for a missed fork.
TEST_F(ProcFilterConnector, ResyncWithNothingLostAddsNothing) {
  Channel report, go;
  Proc parent([&] {
    for (int i = 0; i < 3; i++) {
      if (i == 1 && go.Receive() != 1) return 50;
      pid_t c = fork();
      if (c == 0) {
        pause();
        _exit(0);
      }
      report.Send(c);
    }
    pause();
    return 0;
  });
  parent.Release();
  Killer killer;
  pid_t c0 = report.Receive();
  killer.Add(c0);
  ASSERT_GT(c0, 0);
  ASSERT_EQ(q_->Change(Watch(parent.pid(), NOTE_FORK | NOTE_TRACK)), 0);
  go.Send(1);
  pid_t c1 = report.Receive(), c2 = report.Receive();
  killer.Add(c1);
  killer.Add(c2);
  ASSERT_GT(c1, 0);
  ASSERT_GT(c2, 0);
  auto evs = CollectUntil(*q_, [&](const std::vector<kq_kevent>& all) {
    int n = 0;
    for (const auto& e : all) n += (e.fflags & NOTE_CHILD) != 0;
    return n >= 2;
  });
  std::set<uint64_t> tracked;
  for (const auto& e : evs)
    if (e.fflags & NOTE_CHILD) tracked.insert(e.ident);
  EXPECT_EQ(tracked, (std::set<uint64_t>{static_cast<uint64_t>(c1), static_cast<uint64_t>(c2)}));
  // The parent's NOTE_FORK may trail the children's NOTE_CHILD: take all.
  while (!q_->Collect(8, 200).empty()) {
  }
  events_->InjectOverflowForTesting();
  for (const auto& e : q_->Collect(8, 300))
    ADD_FAILURE() << "after resync: ident " << e.ident << " fflags " << std::hex << e.fflags;
}

// Without the connector: exits only, through pidfds and /proc.
TEST(ProcFilterDegraded, ExitsWithoutTheConnector) {
  TestRuntime rt;
  rt.get()->filters().AddSystem(EVFILT_PROC, "EVFILT_PROC", kqd::MakeProcFilter(rt.get(), nullptr));
  auto q = rt.NewQueue();
  Proc child([] {
    pid_t g = fork();
    if (g == 0) _exit(0);
    waitpid(g, nullptr, 0);
    return 7;
  });
  ASSERT_EQ(q->Change(Watch(child.pid(), NOTE_EXIT | NOTE_FORK | NOTE_TRACK)), 0);
  child.Release();
  auto evs = CollectUntilExit(*q, child.pid());
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, NOTE_EXIT);
  EXPECT_EQ(evs[0].data, 7 << 8);  // the zombie's status (not yet reaped)
}

}  // namespace
