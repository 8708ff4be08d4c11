// EVFILT_READ on a kqueue: data is the watched kqueue's pending count, a
// parked kevent on the parent wakes when the child gets an event, cycles are
// refused with ELOOP, and closing the child removes the knote.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
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
using kqd::testing::TestRuntime;
using kqd::testing::WriteBytes;

using kqd::testing::Ms;
using kqd::testing::TestQueue;
// Waits until collecting from q gives an event on `ident` with data `want`.
std::optional<kq_kevent> WaitData(TestQueue& q, uint64_t ident, int64_t want) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    for (const kq_kevent& ev : q.Collect(8, 50))
      if (ev.ident == ident && ev.data == want) return ev;
  }
  return std::nullopt;
}

class KqueueNestingTest : public ::testing::Test {
 protected:
  int Watch(TestQueue& parent, TestQueue& child, uint32_t flags = 0) {
    return parent.Change(Ev(child.fd(), EVFILT_READ, EV_ADD | flags));
  }
  int Unwatch(TestQueue& parent, TestQueue& child) {
    return parent.Change(Ev(child.fd(), EVFILT_READ, EV_DELETE));
  }

  TestRuntime rt_;
};

TEST_F(KqueueNestingTest, DataIsChildPendingCount) {
  auto parent = rt_.NewQueue();
  auto child = rt_.NewQueue();
  Pipe p1, p2;
  ASSERT_EQ(child->Change(Ev(p1.r.get(), EVFILT_READ, EV_ADD)), 0);
  ASSERT_EQ(child->Change(Ev(p2.r.get(), EVFILT_READ, EV_ADD)), 0);
  ASSERT_EQ(Watch(*parent, *child), 0);
  EXPECT_TRUE(parent->Collect(8, 0).empty());  // child has nothing pending
  WriteBytes(p1.w.get(), 1);
  ASSERT_TRUE(WaitData(*parent, child->fd(), 1));
  WriteBytes(p2.w.get(), 1);
  auto ev = WaitData(*parent, child->fd(), 2);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->filter, EVFILT_READ);
  // Level-triggered: it stays while the child has events, goes when the
  // child's queue drains.
  char c;
  ASSERT_EQ(read(p1.r.get(), &c, 1), 1);
  ASSERT_EQ(read(p2.r.get(), &c, 1), 1);
  EXPECT_TRUE(child->Collect(8, 0).empty());  // stale entries dropped
  EXPECT_TRUE(parent->Collect(8, 0).empty());
}

TEST_F(KqueueNestingTest, ParkedParentWakesOnChildEvent) {
  auto parent = rt_.NewQueue();
  auto child = rt_.NewQueue();
  Pipe p;
  ASSERT_EQ(child->Change(Ev(p.r.get(), EVFILT_READ, EV_ADD)), 0);
  ASSERT_EQ(Watch(*parent, *child, EV_CLEAR), 0);
  auto pending = parent->Start(4, nullptr, nullptr);  // waits forever
  int result = -1, error = -1;
  std::vector<kq_kevent> events;
  EXPECT_FALSE(TestQueue::WaitFor(pending, 50, &result, &error, &events));
  WriteBytes(p.w.get(), 3);
  ASSERT_TRUE(TestQueue::WaitFor(pending, 2000, &result, &error, &events));
  EXPECT_EQ(error, 0);
  ASSERT_EQ(result, 1);
  EXPECT_EQ(events[0].ident, static_cast<uint64_t>(child->fd()));
  EXPECT_EQ(events[0].data, 1);
  // The child's own event is still there for its own collector.
  auto evs = child->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 3);
}

TEST_F(KqueueNestingTest, ThreeLevels) {
  auto top = rt_.NewQueue();
  auto mid = rt_.NewQueue();
  auto leaf = rt_.NewQueue();
  Pipe p;
  ASSERT_EQ(leaf->Change(Ev(p.r.get(), EVFILT_READ, EV_ADD)), 0);
  ASSERT_EQ(Watch(*mid, *leaf), 0);
  ASSERT_EQ(Watch(*top, *mid), 0);
  WriteBytes(p.w.get(), 1);
  ASSERT_TRUE(WaitData(*top, mid->fd(), 1));
}

TEST_F(KqueueNestingTest, CyclesAreRefused) {
  auto a = rt_.NewQueue();
  auto b = rt_.NewQueue();
  auto c = rt_.NewQueue();
  EXPECT_EQ(Watch(*a, *a), ELOOP);  // itself
  ASSERT_EQ(Watch(*a, *b), 0);
  EXPECT_EQ(Watch(*b, *a), ELOOP);  // a -> b -> a
  ASSERT_EQ(Watch(*b, *c), 0);
  EXPECT_EQ(Watch(*c, *a), ELOOP);  // a -> b -> c -> a
  ASSERT_EQ(Watch(*a, *c), 0);      // a diamond is no cycle
  // The refused knotes do not exist.
  EXPECT_EQ(Unwatch(*b, *a), ENOENT);
  EXPECT_EQ(Unwatch(*a, *a), ENOENT);
  // Once the edges are deleted, the other direction is fine.
  ASSERT_EQ(Unwatch(*a, *b), 0);
  EXPECT_EQ(Watch(*c, *a), ELOOP);  // a -> c still there
  ASSERT_EQ(Unwatch(*a, *c), 0);
  EXPECT_EQ(Watch(*b, *a), 0);
  EXPECT_EQ(Watch(*c, *a), 0);
}

TEST_F(KqueueNestingTest, ClosingAParentForgetsItsEdges) {
  auto a = rt_.NewQueue();
  auto b = rt_.NewQueue();
  ASSERT_EQ(Watch(*a, *b), 0);
  a.reset();  // its knotes are detached
  auto c = rt_.NewQueue();
  EXPECT_EQ(Watch(*b, *c), 0);
  EXPECT_EQ(Watch(*c, *b), ELOOP);
}

TEST_F(KqueueNestingTest, ClosingTheChildRemovesTheKnote) {
  auto parent = rt_.NewQueue();
  auto child = rt_.NewQueue();
  Pipe p;
  ASSERT_EQ(child->Change(Ev(p.r.get(), EVFILT_READ, EV_ADD)), 0);
  ASSERT_EQ(Watch(*parent, *child), 0);
  WriteBytes(p.w.get(), 1);
  ASSERT_TRUE(WaitData(*parent, child->fd(), 1));
  const int child_fd = child->fd();
  child.reset();  // its fd is closed, the kqueue with it
  EXPECT_TRUE(parent->Collect(8, 50).empty());
  // The number names no descriptor any more: EBADF, as the seed.
  EXPECT_EQ(parent->Change(Ev(child_fd, EVFILT_READ, EV_DELETE)), EBADF);
}

// The parent's hooks hold the child for a moment while they evaluate it,
// under the parent's lock. If the child's last other reference goes then,
// the child is destroyed on that thread, with the parent's lock held: its
// closing must not call the parent (its readiness observer is the parent's
// knote) synchronously, or the thread waits on a lock it holds. Loops so
// that the last reference is often dropped inside the parent's evaluation;
// a deadlock shows as a hang (the test's timeout).
TEST_F(KqueueNestingTest, ChildDestroyedDuringParentEvaluation) {
  constexpr int kRounds = 300;
  for (int round = 0; round < kRounds; round++) {
    auto parent = rt_.NewQueue();
    auto child = rt_.NewQueue();
    ASSERT_EQ(child->Change(Ev(1, EVFILT_USER, EV_ADD, NOTE_TRIGGER)), 0);
    ASSERT_EQ(Watch(*parent, *child), 0);  // level-triggered: re-evaluated
    std::atomic<bool> stop{false};
    std::thread collector([&] {
      while (!stop) parent->Collect(8, 0);
    });
    std::this_thread::sleep_for(std::chrono::microseconds(50 + round % 200));
    child->Abandon();
    stop = true;
    collector.join();
    // The child is gone, whoever destroyed it: so is the knote on it.
    ASSERT_EQ(parent->Change(Ev(child->fd(), EVFILT_READ, EV_DELETE)), ENOENT);
  }
}

TEST_F(KqueueNestingTest, DeleteStopsWakeUps) {
  auto parent = rt_.NewQueue();
  auto child = rt_.NewQueue();
  Pipe p;
  ASSERT_EQ(child->Change(Ev(p.r.get(), EVFILT_READ, EV_ADD | EV_CLEAR)), 0);
  ASSERT_EQ(Watch(*parent, *child), 0);
  ASSERT_EQ(Unwatch(*parent, *child), 0);
  WriteBytes(p.w.get(), 1);
  auto evs = child->Collect(8, 1000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(parent->Collect(8, 50).empty());
}

}  // namespace
