// Several threads on one kqueue: no lost events, no sleeping while one is
// pending (NetBSD PR kern/50094), no use-after-free when a knote is deleted
// or its kqueue closed while another thread evaluates it. Run under TSan
// and ASan by the CI configs.
#include <errno.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/core_test_support.h"
#include "tests/support/manual_filter.h"

namespace kqd {
namespace testing {
namespace {

using ConcurrencyTest = ManualFilterTest;

// The PR 50094 scenario: one always-ready level-triggered knote, two
// threads polling it. In 1.65 a thread could find the count at zero while
// the other was re-evaluating the knote, and return 0.
TEST_F(ConcurrencyTest, TwoPollersNeverMissALevelTriggeredEvent) {
  filter_->Set(1, 1);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD)), 0);
  constexpr int kCalls = 10000;
  std::atomic<int> misses{0};
  auto poller = [&] {
    for (int i = 0; i < kCalls; i++)
      if (q_->Collect(1, 0).size() != 1) misses++;
  };
  std::thread a(poller), b(poller);
  a.join();
  b.join();
  EXPECT_EQ(misses, 0);
}

// Many blocked collectors, many oneshot events fired from another thread:
// every event is delivered exactly once, and nobody stays asleep.
TEST_F(ConcurrencyTest, ParkedCollectorsReceiveEveryEventOnce) {
  constexpr int kEvents = 2000;
  constexpr int kThreads = 4;
  for (int i = 0; i < kEvents; i++)
    ASSERT_EQ(q_->Change(Ev(i, m_, EV_ADD | EV_ONESHOT)), 0);
  std::vector<std::atomic<int>> got(kEvents);
  std::atomic<int> total{0};
  std::vector<std::thread> collectors;
  for (int t = 0; t < kThreads; t++) {
    collectors.emplace_back([&] {
      while (total < kEvents) {
        for (const auto& e : q_->Collect(3, 200)) {
          got[e.ident]++;
          total++;
        }
      }
    });
  }
  for (int i = 0; i < kEvents; i++) filter_->Set(i, 1);
  for (auto& t : collectors) t.join();
  for (int i = 0; i < kEvents; i++) EXPECT_EQ(got[i], 1) << "ident " << i;
  EXPECT_EQ(q_->kq().Pending(), 0u);
}

// A parked call is answered when an event arrives; one event wakes (at
// least) one of several parked calls and none is left with a pending event.
TEST_F(ConcurrencyTest, NoSleepWhileEventPending) {
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD | EV_CLEAR)), 0);
  for (int round = 0; round < 200; round++) {
    std::vector<std::shared_ptr<TestQueue::Pending>> calls;
    for (int i = 0; i < 3; i++) calls.push_back(q_->Start(1, nullptr, nullptr));
    filter_->Set(1, round + 1);
    int answered = 0;
    for (auto& c : calls) {
      if (TestQueue::WaitFor(c, answered == 0 ? 5000 : 0, nullptr, nullptr, nullptr))
        answered++;
    }
    EXPECT_EQ(answered, 1) << "round " << round;
    q_->kq().Close();  // answers the rest with EBADF
    for (auto& c : calls) TestQueue::WaitFor(c, -1, nullptr, nullptr, nullptr);
    q_ = rt_.NewQueue();
    filter_->level_without_notify(1, 0);
    ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD | EV_CLEAR)), 0);
  }
}

// Deleting, or closing the kqueue, while another thread is evaluating the
// same knotes (slow evaluation widens the window) must be safe: deletes
// succeed, a deleted knote is never reported again, the survivors still
// are, a closed kqueue refuses changes, and every knote is detached exactly
// once.
TEST_F(ConcurrencyTest, DeleteAndCloseDuringEvaluation) {
  filter_->slow_event_us = 50;
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < 20; i++) {
      filter_->Set(i, 1);
      ASSERT_EQ(q_->Change(Ev(i, m_, EV_ADD)), 0);
    }
    std::atomic<bool> stop{false};
    std::thread collector([&] {
      while (!stop) q_->Collect(8, 0);
    });
    std::thread notifier([&] {
      for (int k = 0; k < 200 && !stop; k++) filter_->Set(k % 20, 1);
    });
    for (int i = 0; i < 20; i += 2) EXPECT_EQ(q_->Change(Ev(i, m_, EV_DELETE)), 0);
    const bool close = round % 2;
    if (close) q_->kq().Close();
    stop = true;
    collector.join();
    notifier.join();
    if (close) {
      EXPECT_EQ(q_->Change(Ev(1, m_, EV_ADD)), EBADF);
      EXPECT_EQ(filter_->detaches.load(), filter_->attaches.load());
    } else {
      // Level-triggered and still true: exactly the odd idents, once each.
      std::set<uint64_t> seen;
      for (const kq_kevent& ev : q_->Collect(64, 0)) {
        EXPECT_EQ(ev.ident % 2, 1u) << "deleted knote " << ev.ident << " reported";
        EXPECT_TRUE(seen.insert(ev.ident).second) << "ident " << ev.ident << " twice";
      }
      EXPECT_EQ(seen.size(), 10u);
      EXPECT_EQ(filter_->detaches.load(), filter_->attaches.load() - 10);
    }
    q_ = rt_.NewQueue();  // closes the old one
    EXPECT_EQ(filter_->detaches.load(), filter_->attaches.load());
  }
  EXPECT_EQ(filter_->attaches.load(), 20 * 20);
}

// Changes from several threads on one kqueue at once.
TEST_F(ConcurrencyTest, ConcurrentRegistration) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; i++) {
        uint64_t ident = t * 1000 + i;
        EXPECT_EQ(q_->Change(Ev(ident, m_, EV_ADD)), 0);
        if (i % 2) EXPECT_EQ(q_->Change(Ev(ident, m_, EV_DELETE)), 0);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(filter_->attaches, 2000);
  EXPECT_EQ(filter_->detaches, 1000);
}

// ~Kqueue may run on a thread that holds a lock its readiness observers
// take: a parent kqueue's hook dropping the last reference to the child it
// evaluates holds the parent's lock, and the child's observer is the
// parent's knote, whose Notify takes that lock. Closing in the destructor
// must therefore not call the observers on the destroying thread (the old
// ~Kqueue -> Close did, and waited on itself); they are told from the
// reactor. Deterministic: the destroying thread holds the observer's lock.
TEST_F(ConcurrencyTest, DestroyedUnderAnObserversLockDoesNotWaitForIt) {
  // Owned by the observer too: it may still be unlocking when the test ends.
  struct Parent {
    std::mutex lock;  // stands for the parent kqueue's
    std::atomic<int> told{0};
  };
  auto parent = std::make_shared<Parent>();
  auto child = rt_.NewQueue();
  filter_->Set(1, 1);
  ASSERT_EQ(child->Change(Ev(1, m_, EV_ADD)), 0);
  child->kq().AddReadinessObserver([parent] {
    std::lock_guard<std::mutex> l(parent->lock);
    parent->told++;
  });
  std::promise<void> destroyed;
  std::future<void> done = destroyed.get_future();
  std::thread destroyer([&] {
    std::lock_guard<std::mutex> l(parent->lock);
    child->Abandon();  // the last reference: ~Kqueue runs here, lock held
    destroyed.set_value();
  });
  if (done.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    destroyer.detach();  // stuck on parent_lock: the process ends with it
    FAIL() << "~Kqueue waited for a lock its destroying thread holds";
  }
  destroyer.join();
  // The observers are still told (the queue was closed), from the reactor.
  for (int i = 0; i < 2000 && parent->told == 0; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(parent->told.load(), 1);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
