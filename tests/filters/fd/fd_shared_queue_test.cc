// Fd knotes on a queue shared by several processes (a kqueue fd inherited
// over fork() or passed with SCM_RIGHTS is the same queue here). An fd
// ident names a descriptor of the process that makes the change, so each
// process has its own fd knotes on the queue: a change names only the
// caller's own, a number the caller does not have is EBADF, and each knote
// is charged to the user of the process that added it. Knotes of filters
// whose idents are not descriptors (USER, TIMER, SIGNAL, PROC) stay shared.
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <memory>
#include <set>
#include <vector>

#include "daemon/core/user_limits.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"
#include "tests/support/fd_test_util.h"

namespace {

using kqd::ScopedFd;
using kqd::testing::Ev;
using kqd::testing::LocalProcess;
using kqd::testing::Ms;
using kqd::testing::Pipe;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;
using kqd::testing::WriteBytes;

constexpr uid_t kOtherUid = 4242;

// Another process sharing the queue: another pid, another user, and only
// the descriptors it is given (numbers it "has"; in this in-process harness
// they name the test's own files).
class OtherProcess : public LocalProcess {
 public:
  explicit OtherProcess(std::set<int> fds) : fds_(std::move(fds)) {}
  pid_t pid() const override { return getpid() + 100000; }
  uid_t ruid() const override { return kOtherUid; }
  uid_t euid() const override { return kOtherUid; }
  kqd::ScopedFd CopyFd(int fd, int* error) const override {
    if (!fds_.count(fd)) {
      *error = EBADF;
      return ScopedFd();
    }
    return LocalProcess::CopyFd(fd, error);
  }

 private:
  std::set<int> fds_;
};

class FdSharedQueueTest : public ::testing::Test {
 protected:
  void SetUp() override { signal(SIGPIPE, SIG_IGN); }

  int ChangeAs(const std::shared_ptr<kqd::ProcessContext>& who, const kq_kevent& change) {
    int err = 0;
    q_->KeventAs(who, {change}, nullptr, 0, nullptr, &err);
    return err;
  }
  std::vector<uint64_t> CollectUdata(long ms) {
    std::vector<uint64_t> out;
    for (const kq_kevent& ev : q_->Collect(16, ms)) out.push_back(ev.udata);
    std::sort(out.begin(), out.end());
    return out;
  }
  uint64_t Knotes(uid_t uid) {
    return rt_.get()->limits().InUse(uid, kqd::Resource::kKnotes);
  }

  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_ = rt_.NewQueue();
};

TEST_F(FdSharedQueueTest, SameNumberInTwoProcessesIsTwoKnotes) {
  Pipe p;
  auto other = std::make_shared<OtherProcess>(std::set<int>{p.r.get()});
  ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_ADD, 0, 0, 1)), 0);
  ASSERT_EQ(ChangeAs(other, Ev(p.r.get(), EVFILT_READ, EV_ADD, 0, 0, 2)), 0);
  WriteBytes(p.w.get(), 1);
  // Both are there, each with its own udata: neither update hit the other.
  // Level-triggered: each collection returns every active knote. The two
  // are activated one after the other on the reactor thread: wait (2 s at
  // most) for both, without spinning the reactor out of its CPU.
  std::vector<uint64_t> got;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (got.size() < 2 && std::chrono::steady_clock::now() < deadline) {
    got = CollectUdata(20);
    if (got.size() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(got, (std::vector<uint64_t>{1, 2}));
  // A delete names the caller's own knote only.
  ASSERT_EQ(ChangeAs(other, Ev(p.r.get(), EVFILT_READ, EV_DELETE)), 0);
  EXPECT_EQ(ChangeAs(other, Ev(p.r.get(), EVFILT_READ, EV_DELETE)), ENOENT);
  EXPECT_EQ(CollectUdata(0), (std::vector<uint64_t>{1}));
  EXPECT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_DELETE)), 0);
}

TEST_F(FdSharedQueueTest, ANumberTheCallerDoesNotHaveIsEbadfAndTouchesNothing) {
  Pipe p;
  auto other = std::make_shared<OtherProcess>(std::set<int>{});
  ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_ADD, 0, 0, 1)), 0);
  // Before: silently updated the registrant's knote (udata 7).
  EXPECT_EQ(ChangeAs(other, Ev(p.r.get(), EVFILT_READ, EV_ADD, 0, 0, 7)), EBADF);
  EXPECT_EQ(ChangeAs(other, Ev(p.r.get(), EVFILT_READ, EV_DISABLE)), EBADF);
  EXPECT_EQ(ChangeAs(other, Ev(p.r.get(), EVFILT_READ, EV_DELETE)), EBADF);
  WriteBytes(p.w.get(), 1);
  auto evs = q_->Collect(8, 1000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].udata, 1u);
}

TEST_F(FdSharedQueueTest, KnotesAreChargedToTheUserWhoAddsThem) {
  Pipe p;
  auto other = std::make_shared<OtherProcess>(std::set<int>{p.r.get(), p.w.get()});
  const uid_t me = geteuid();
  const uint64_t mine = Knotes(me);
  ASSERT_EQ(ChangeAs(other, Ev(p.r.get(), EVFILT_READ, EV_ADD)), 0);
  ASSERT_EQ(ChangeAs(other, Ev(p.w.get(), EVFILT_WRITE, EV_ADD)), 0);
  ASSERT_EQ(ChangeAs(other, Ev(77, EVFILT_USER, EV_ADD)), 0);
  EXPECT_EQ(Knotes(kOtherUid), 3u);
  EXPECT_EQ(Knotes(me), mine);  // not the queue's opener
  ASSERT_EQ(ChangeAs(other, Ev(p.r.get(), EVFILT_READ, EV_DELETE)), 0);
  EXPECT_EQ(Knotes(kOtherUid), 2u);
  q_->kq().Close();
  EXPECT_EQ(Knotes(kOtherUid), 0u);
}

TEST_F(FdSharedQueueTest, NonFdKnotesStayShared) {
  auto other = std::make_shared<OtherProcess>(std::set<int>{});
  ASSERT_EQ(q_->Change(Ev(5, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, 9)), 0);
  ASSERT_EQ(ChangeAs(other, Ev(5, EVFILT_USER, 0, NOTE_TRIGGER)), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].udata, 9u);
  EXPECT_EQ(ChangeAs(other, Ev(5, EVFILT_USER, EV_DELETE)), 0);
  EXPECT_EQ(q_->Change(Ev(5, EVFILT_USER, EV_DELETE)), ENOENT);
}

}  // namespace
