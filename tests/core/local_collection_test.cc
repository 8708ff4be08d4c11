// The core's side of local collection (ABI 4), in-process with the real fd
// filters on pipes: the owner's signal is set only on transitions of "some
// knote is not local", goes with the queue, and a second owner is refused;
// marks and SKIP_LOCAL count only for the owner's process; a SKIP_LOCAL
// waiter ahead of a plain one does not hold the plain one back.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/core_test_support.h"

namespace kqd {
namespace testing {
namespace {

// What the kqueue asked of the signal, and whether it still holds it.
struct SignalLog {
  std::vector<bool> sets;
  bool destroyed = false;
};

class FakeSignal : public LocalSignal {
 public:
  explicit FakeSignal(std::shared_ptr<SignalLog> log) : log_(std::move(log)) {}
  ~FakeSignal() override { log_->destroyed = true; }
  void Set(bool readable) override { log_->sets.push_back(readable); }

 private:
  std::shared_ptr<SignalLog> log_;
};

// Another process sharing the queue (after fork): same descriptors here,
// another pid.
class OtherProcess : public LocalProcess {
 public:
  pid_t pid() const override { return getpid() + 100000; }
};

// The owner's process as the daemon's is: it keeps a closed queue's signal.
class KeepingProcess : public LocalProcess {
 public:
  void KeepClosedQueueSignal(std::unique_ptr<LocalSignal> signal) const override {
    kept->push_back(std::move(signal));
  }
  std::shared_ptr<std::vector<std::unique_ptr<LocalSignal>>> kept =
      std::make_shared<std::vector<std::unique_ptr<LocalSignal>>>();
};

class LocalCollectionCore : public ::testing::Test {
 protected:
  void SetUp() override {
    q_ = rt_.NewQueue();
    ASSERT_EQ(pipe2(p_, O_CLOEXEC | O_NONBLOCK), 0);
  }
  void TearDown() override {
    q_.reset();
    close(p_[0]);
    close(p_[1]);
  }
  int Attach() {
    return q_->kq().AttachLocal(rt_.process(), std::make_unique<FakeSignal>(log_));
  }
  // Changes in a LOCAL_CHANGES call of `caller` (null: the owner).
  int Local(std::vector<kq_kevent> changes,
            const std::shared_ptr<ProcessContext>& caller = nullptr) {
    int err = 0;
    timespec zero{};
    q_->KeventLocal(KQ_KEVENT_LOCAL_CHANGES, caller, changes, nullptr, 0, &zero, &err);
    return err;
  }
  kq_kevent PipeRead(uint32_t flags = EV_ADD, bool mark = true) const {
    kq_kevent e = Ev(static_cast<uint64_t>(p_[0]), EVFILT_READ, flags);
    if (mark) e.reserved = KQ_CHANGE_LOCAL;
    return e;
  }
  // A zero-timeout SKIP_LOCAL collection by `caller` (null: the owner).
  std::vector<kq_kevent> SkipLocal(const std::shared_ptr<ProcessContext>& caller = nullptr) {
    std::vector<kq_kevent> out;
    timespec zero{};
    q_->KeventLocal(KQ_KEVENT_SKIP_LOCAL, caller, {}, &out, 8, &zero);
    return out;
  }

  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_;
  int p_[2] = {-1, -1};
  std::shared_ptr<SignalLog> log_ = std::make_shared<SignalLog>();
};

TEST_F(LocalCollectionCore, SignalIsSetOnlyOnTransitionsAndGoesWithTheQueue) {
  ASSERT_EQ(Attach(), 0);
  EXPECT_TRUE(log_->sets.empty());  // empty queue: not readable, nothing to do
  ASSERT_EQ(Local({PipeRead()}), 0);
  EXPECT_TRUE(log_->sets.empty());
  ASSERT_EQ(Local({Ev(1, EVFILT_USER, EV_ADD)}), 0);
  EXPECT_EQ(log_->sets, std::vector<bool>{true});
  ASSERT_EQ(Local({Ev(2, EVFILT_USER, EV_ADD)}), 0);
  ASSERT_EQ(Local({Ev(1, EVFILT_USER, EV_DELETE)}), 0);
  EXPECT_EQ(log_->sets, std::vector<bool>{true});
  ASSERT_EQ(Local({Ev(2, EVFILT_USER, EV_DELETE)}), 0);
  EXPECT_EQ(log_->sets, (std::vector<bool>{true, false}));
  // The local knote changed without its mark, then with it again.
  ASSERT_EQ(Local({PipeRead(EV_ADD, false)}), 0);
  ASSERT_EQ(Local({PipeRead()}), 0);
  EXPECT_EQ(log_->sets, (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(q_->kq().Snapshot().local, 1u);
  EXPECT_FALSE(log_->destroyed);
  q_->kq().Close();
  EXPECT_TRUE(log_->destroyed);
}

TEST_F(LocalCollectionCore, TheOwnersCloseRaisesTheSignalUntilItsNextCallAndTheEndKeepsIt) {
  auto owner = std::make_shared<KeepingProcess>();
  ASSERT_EQ(q_->kq().AttachLocal(owner, std::make_unique<FakeSignal>(log_)), 0);
  ASSERT_EQ(Local({PipeRead()}, owner), 0);
  EXPECT_TRUE(log_->sets.empty());
  q_->kq().OwnerClosedDescriptor(OtherProcess());  // not the owner: nothing
  EXPECT_TRUE(log_->sets.empty());
  q_->kq().OwnerClosedDescriptor(*owner);
  q_->kq().OwnerClosedDescriptor(*owner);
  EXPECT_EQ(log_->sets, std::vector<bool>{true});
  // Another process's call changes nothing; the owner's next call clears it.
  SkipLocal(std::make_shared<OtherProcess>());
  EXPECT_EQ(log_->sets, std::vector<bool>{true});
  SkipLocal(owner);
  EXPECT_EQ(log_->sets, (std::vector<bool>{true, false}));
  // The end: readable, and handed to the owner's process, not destroyed.
  q_->kq().Close();
  EXPECT_EQ(log_->sets, (std::vector<bool>{true, false, true}));
  EXPECT_FALSE(log_->destroyed);
  ASSERT_EQ(owner->kept->size(), 1u);
  q_->kq().OwnerClosedDescriptor(*owner);  // closed: nothing
  EXPECT_EQ(log_->sets.size(), 3u);
  owner->kept->clear();
  EXPECT_TRUE(log_->destroyed);
}

TEST_F(LocalCollectionCore, OneOwnerForTheQueuesLife) {
  ASSERT_EQ(q_->Change(Ev(1, EVFILT_USER, EV_ADD)), 0);
  ASSERT_EQ(Attach(), 0);
  EXPECT_EQ(log_->sets, std::vector<bool>{true});  // a knote that is not local
  auto second = std::make_shared<SignalLog>();
  EXPECT_EQ(q_->kq().AttachLocal(std::make_shared<OtherProcess>(),
                                 std::make_unique<FakeSignal>(second)),
            EBUSY);
  EXPECT_TRUE(second->destroyed);  // dropped at once
  EXPECT_TRUE(second->sets.empty());
  q_->kq().Close();
  auto third = std::make_shared<SignalLog>();
  EXPECT_EQ(q_->kq().AttachLocal(rt_.process(), std::make_unique<FakeSignal>(third)), EBADF);
  EXPECT_TRUE(third->destroyed);
}

TEST_F(LocalCollectionCore, OnlyTheOwnersMarksAndSkipsCount) {
  auto other = std::make_shared<OtherProcess>();
  ASSERT_EQ(Attach(), 0);
  ASSERT_EQ(write(p_[1], "x", 1), 1);
  // The other process's own knote on the same number: marked, not local.
  ASSERT_EQ(Local({PipeRead()}, other), 0);
  EXPECT_EQ(log_->sets, std::vector<bool>{true});
  EXPECT_EQ(q_->kq().Snapshot().local, 0u);
  ASSERT_EQ(Local({PipeRead()}), 0);  // the owner's: local
  EXPECT_EQ(q_->kq().Snapshot().local, 1u);
  // The owner's SKIP_LOCAL leaves its own knote out, not the other's.
  std::vector<kq_kevent> got = SkipLocal();
  EXPECT_EQ(got.size(), 1u);
  // The other process's SKIP_LOCAL is an ordinary call: both.
  EXPECT_EQ(SkipLocal(other).size(), 2u);
}

TEST_F(LocalCollectionCore, SkippingWaiterDoesNotHoldBackAPlainOne) {
  ASSERT_EQ(Attach(), 0);
  ASSERT_EQ(Local({PipeRead()}), 0);
  // The owner's SKIP_LOCAL call parks first, then a plain one.
  timespec long_wait = Ms(10000);
  std::vector<kq_kevent> skip_out;
  std::thread skipper([&] {
    q_->KeventLocal(KQ_KEVENT_SKIP_LOCAL, nullptr, {}, &skip_out, 4, &long_wait);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  uint64_t wait_id = 0;
  auto plain = q_->Start(4, &long_wait, &wait_id);
  ASSERT_NE(wait_id, 0u);
  ASSERT_EQ(write(p_[1], "x", 1), 1);
  int result = 0;
  std::vector<kq_kevent> out;
  ASSERT_TRUE(TestQueue::WaitFor(plain, 5000, &result, nullptr, &out));
  EXPECT_EQ(result, 1);
  // The skipping call is still parked; a user event (not local) ends it.
  ASSERT_EQ(Local({Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR)}), 0);
  ASSERT_EQ(Local({Ev(1, EVFILT_USER, 0, NOTE_TRIGGER)}), 0);
  skipper.join();
  ASSERT_EQ(skip_out.size(), 1u);
  EXPECT_EQ(skip_out[0].filter, EVFILT_USER);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
