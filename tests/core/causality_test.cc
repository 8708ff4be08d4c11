// Causality (issue 11, item 1): an event whose cause completed before
// kevent() was called is returned by that call — zero timeout or not. BSD
// activates knotes synchronously from the write, mkdir, close or truncate;
// here readiness reaches the core on the reactor thread, so every kevent
// first catches the sources up (Reactor::CatchUp) and only then scans.
//
// Each case makes the race likely: hundreds of knotes changed at once, then
// one zero-timeout kevent at once, in a loop, so that a regression cannot
// pass by luck (without the catch-up these saw 0-40 of 400).
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "daemon/util/scoped_fd.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"
#include "tests/support/fd_test_util.h"

namespace {

using kqd::ScopedFd;
using kqd::testing::Ev;
using kqd::testing::Pipe;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;

constexpr int kKnotes = 400;

// Collects with a zero timeout: what the queue holds right now.
std::vector<kq_kevent> PollNow(TestQueue& q, size_t nevents = 4 * kKnotes) {
  std::vector<kq_kevent> events;
  const timespec zero{0, 0};
  int error = 0;
  const int n = q.Kevent({}, &events, nevents, &zero, &error);
  EXPECT_GE(n, 0) << strerror(error);
  return events;
}

void RaiseFdLimit() {
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rl.rlim_cur = rl.rlim_max;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  ASSERT_GE(rl.rlim_cur, static_cast<rlim_t>(4 * kKnotes));
}

class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/causality.XXXXXX";
    path_ = mkdtemp(&tmpl[0]) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

TEST(CausalityTest, PipesWrittenBeforeTheCallAreAllReadable) {
  RaiseFdLimit();
  TestRuntime rt;
  auto q = rt.NewQueue();
  std::vector<Pipe> pipes(kKnotes);
  for (auto& p : pipes) {
    ASSERT_TRUE(p.r.valid());
    ASSERT_EQ(q->Change(Ev(p.r.get(), EVFILT_READ, EV_ADD)), 0);
  }
  ASSERT_TRUE(PollNow(*q).empty());
  for (int round = 0; round < 50; round++) {
    for (auto& p : pipes) ASSERT_EQ(write(p.w.get(), "x", 1), 1);
    const auto events = PollNow(*q);
    ASSERT_EQ(events.size(), static_cast<size_t>(kKnotes)) << "round " << round;
    for (const auto& ev : events) EXPECT_EQ(ev.data, 1);
    char c;
    for (auto& p : pipes) ASSERT_EQ(read(p.r.get(), &c, 1), 1);
    // Level-triggered: drained pipes are reported no more.
    ASSERT_TRUE(PollNow(*q).empty()) << "round " << round;
  }
}

TEST(CausalityTest, BothWritersClosedBeforeTheCallGiveEveryEof) {
  RaiseFdLimit();
  TestRuntime rt;
  for (int round = 0; round < 20; round++) {
    auto q = rt.NewQueue();
    // Each pipe has two writers (the second a dup); closing both ends it.
    std::vector<Pipe> pipes(kKnotes / 2);
    std::vector<ScopedFd> second(pipes.size());
    for (size_t i = 0; i < pipes.size(); i++) {
      second[i].reset(dup(pipes[i].w.get()));
      ASSERT_TRUE(second[i].valid());
      ASSERT_EQ(q->Change(Ev(pipes[i].r.get(), EVFILT_READ, EV_ADD | EV_CLEAR)), 0);
    }
    for (size_t i = 0; i < pipes.size(); i++) {
      pipes[i].w.reset();
      second[i].reset();
    }
    const auto events = PollNow(*q);
    ASSERT_EQ(events.size(), pipes.size()) << "round " << round;
    for (const auto& ev : events) EXPECT_TRUE(ev.flags & EV_EOF) << "round " << round;
  }
}

TEST(CausalityTest, MkdirInWatchedDirectoriesIsSeenAtOnce) {
  RaiseFdLimit();
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  TestRuntime rt;
  auto q = rt.NewQueue();
  std::vector<ScopedFd> dirs;
  for (int i = 0; i < kKnotes; i++) {
    const std::string d = dir / std::to_string(i);
    ASSERT_EQ(mkdir(d.c_str(), 0755), 0);
    dirs.emplace_back(open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(dirs.back().valid());
    ASSERT_EQ(q->Change(Ev(dirs.back().get(), EVFILT_VNODE, EV_ADD | EV_CLEAR,
                           NOTE_WRITE | NOTE_LINK)),
              0);
  }
  for (int round = 0; round < 10; round++) {
    for (int i = 0; i < kKnotes; i++) {
      const std::string sub = dir / (std::to_string(i) + "/sub");
      ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
    }
    auto events = PollNow(*q);
    ASSERT_EQ(events.size(), static_cast<size_t>(kKnotes)) << "mkdir, round " << round;
    for (const auto& ev : events) EXPECT_EQ(ev.fflags, NOTE_WRITE | NOTE_LINK);
    for (int i = 0; i < kKnotes; i++) {
      const std::string sub = dir / (std::to_string(i) + "/sub");
      ASSERT_EQ(rmdir(sub.c_str()), 0);
    }
    events = PollNow(*q);
    ASSERT_EQ(events.size(), static_cast<size_t>(kKnotes)) << "rmdir, round " << round;
  }
}

TEST(CausalityTest, TruncateAddsExtendToAnActiveOneshotKnote) {
  // A ONESHOT knote is not re-evaluated at collection: whatever happened
  // before the call must have been folded into it already.
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  TestRuntime rt;
  auto q = rt.NewQueue();
  ScopedFd fd(open((dir / "f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  for (int round = 0; round < 200; round++) {
    ASSERT_EQ(ftruncate(fd.get(), 0), 0);
    ASSERT_EQ(q->Change(Ev(fd.get(), EVFILT_VNODE, EV_ADD | EV_ONESHOT,
                           NOTE_ATTRIB | NOTE_EXTEND)),
              0);
    ASSERT_EQ(fchmod(fd.get(), round % 2 ? 0600 : 0644), 0);  // active: ATTRIB
    ASSERT_EQ(ftruncate(fd.get(), 4096), 0);                 // grows: EXTEND
    const auto events = PollNow(*q);
    ASSERT_EQ(events.size(), 1u) << "round " << round;
    EXPECT_EQ(events[0].fflags & (NOTE_ATTRIB | NOTE_EXTEND), NOTE_ATTRIB | NOTE_EXTEND)
        << "round " << round;
  }
}

TEST(CausalityTest, ParkedCallWithNothingPendingStillWaits) {
  // The catch-up changes nothing for a call that must wait: it parks, and
  // an event after it answers it.
  TestRuntime rt;
  auto q = rt.NewQueue();
  Pipe p;
  ASSERT_EQ(q->Change(Ev(p.r.get(), EVFILT_READ, EV_ADD)), 0);
  ASSERT_TRUE(q->Collect(8, 50).empty());
  ASSERT_EQ(write(p.w.get(), "x", 1), 1);
  EXPECT_EQ(q->Collect(8, 2000).size(), 1u);
}

}  // namespace
