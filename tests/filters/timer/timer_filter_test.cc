// EVFILT_TIMER through the core: periods and units, expiration counting,
// NOTE_ABSTIME, restarts, the per-user limit and the shared timerfd.
//
// Timing assertions only bound what must hold however loaded the machine
// is: a timer never fires early, and counts derive from elapsed time.
// Upper bounds on latency are generous.
#include <dirent.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "daemon/core/reactor.h"
#include "daemon/core/user_limits.h"
#include "daemon/filters/timer/timer_filter.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"

namespace {

using kqd::testing::Ev;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;
using SteadyClock = std::chrono::steady_clock;

long MsSince(SteadyClock::time_point start) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                               SteadyClock::now() - start)
                               .count());
}

void SleepMs(long ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

int64_t RealtimeMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int CountOpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (readdir(d) != nullptr) n++;
  closedir(d);
  return n;
}

kq_kevent Timer(uint64_t ident, int64_t data, uint32_t fflags = 0,
                uint32_t flags = EV_ADD, uint64_t udata = 0) {
  return Ev(ident, EVFILT_TIMER, flags, fflags, data, udata);
}

class TimerFilterTest : public ::testing::Test {
 protected:
  uint64_t TimersInUse() {
    return rt_.get()->limits().InUse(getuid(), kqd::Resource::kTimers);
  }

  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_ = rt_.NewQueue();
};

TEST_F(TimerFilterTest, PeriodicTimerFiresRepeatedly) {
  ASSERT_EQ(q_->Change(Timer(7, 20, NOTE_MSECONDS, EV_ADD, 0x1234)), 0);
  const auto start = SteadyClock::now();
  int seen = 0;
  int64_t total = 0;
  while (seen < 5 && MsSince(start) < 5000) {
    auto evs = q_->Collect(8, 1000);
    for (const kq_kevent& ev : evs) {
      EXPECT_EQ(ev.ident, 7u);
      EXPECT_EQ(ev.filter, EVFILT_TIMER);
      EXPECT_GE(ev.data, 1);
      EXPECT_EQ(ev.fflags, 0u);
      EXPECT_EQ(ev.udata, 0x1234u);
      EXPECT_EQ(ev.flags & (EV_ADD | EV_CLEAR), EV_ADD | EV_CLEAR);
      EXPECT_EQ(ev.flags & EV_ERROR, 0u);
      seen++;
      total += ev.data;
    }
  }
  EXPECT_EQ(seen, 5);
  // Never early: five or more 20 ms periods took at least 100 ms.
  EXPECT_GE(MsSince(start), 20 * total - 20);
}

TEST_F(TimerFilterTest, DataCountsMissedExpirations) {
  const auto start = SteadyClock::now();
  ASSERT_EQ(q_->Change(Timer(1, 10)), 0);
  SleepMs(120);
  auto evs = q_->Collect(8, 0);
  const long elapsed = MsSince(start);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(evs[0].data, 5);
  EXPECT_LE(evs[0].data, elapsed / 10);  // never more than time allows
  // The count restarts after retrieval.
  evs = q_->Collect(8, 2000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(evs[0].data, 1);
  EXPECT_LT(evs[0].data, 5);
}

TEST_F(TimerFilterTest, CountsTrackElapsedTimeWithoutDrift) {
  // However late the loop is, the sum of the counts follows the clock:
  // deadlines stay on the original grid.
  const auto start = SteadyClock::now();
  ASSERT_EQ(q_->Change(Timer(1, 10)), 0);
  int64_t total = 0;
  while (MsSince(start) < 500) {
    for (const kq_kevent& ev : q_->Collect(8, 50)) total += ev.data;
  }
  SleepMs(5);
  for (const kq_kevent& ev : q_->Collect(8, 0)) total += ev.data;
  const long elapsed = MsSince(start);
  EXPECT_LE(total, elapsed / 10);
  EXPECT_GE(total, 500 / 10 - 1);
}

// Blocks the event loop for `ms` (as a slow callback or a loaded machine
// would) and returns once it is blocked.
void StallLoop(kqd::Reactor& reactor, long ms) {
  auto started = std::make_shared<std::promise<void>>();
  auto f = started->get_future();
  reactor.Post([started, ms] {
    started->set_value();
    SleepMs(ms);
  });
  f.wait();
}

TEST_F(TimerFilterTest, LateLoopCountsTheMissedPeriods) {
  ASSERT_EQ(q_->Change(Timer(1, 10)), 0);
  const auto start = SteadyClock::now();
  StallLoop(rt_.get()->reactor(), 100);  // no callback can run meanwhile
  auto evs = q_->Collect(8, 2000);
  const long elapsed = MsSince(start);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(evs[0].data, 8);  // one wake-up, ~10 periods
  EXPECT_LE(evs[0].data, elapsed / 10 + 1);
}

TEST_F(TimerFilterTest, LateWakeupsDoNotDrift) {
  // The loop is kept busy 25 ms out of every ~28: each expiration is seen
  // late. Re-arming "period after the late wake-up" would lose a period
  // every few cycles; deadlines on the original grid lose none.
  kqd::Reactor& reactor = rt_.get()->reactor();
  const auto start = SteadyClock::now();
  ASSERT_EQ(q_->Change(Timer(1, 20)), 0);
  std::atomic<bool> stop{false};
  std::thread staller([&] {
    while (!stop) {
      auto done = std::make_shared<std::promise<void>>();
      auto f = done->get_future();
      reactor.Post([done] {
        SleepMs(25);
        done->set_value();
      });
      f.wait();
      SleepMs(3);
    }
  });
  int64_t total = 0;
  while (MsSince(start) < 600) {
    for (const kq_kevent& ev : q_->Collect(8, 50)) total += ev.data;
  }
  stop = true;
  staller.join();
  const long stalled_for = MsSince(start);
  SleepMs(60);
  for (const kq_kevent& ev : q_->Collect(8, 0)) total += ev.data;
  EXPECT_GE(total, stalled_for / 20 - 1);
  EXPECT_LE(total, MsSince(start) / 20);
}

TEST_F(TimerFilterTest, CallbackOvertakenByARestartIsIgnored) {
  // Make a timer's callback be dispatched, then restart the timer before
  // the callback reaches the kqueue: that callback belongs to the old
  // timer and must not count for the new one.
  kqd::Reactor& reactor = rt_.get()->reactor();
  StallLoop(reactor, 150);  // both deadlines below pass while it is stalled
  auto blocker_running = std::make_shared<std::promise<void>>();
  std::promise<void> restarted;
  auto running = blocker_running->get_future();
  auto go_on = restarted.get_future().share();
  // Due just before the knote's timer: runs first in the same batch.
  reactor.AddTimer(kqd::Reactor::Clock::kMonotonic,
                   kqd::Reactor::Now(kqd::Reactor::Clock::kMonotonic) + 49000000,
                   [blocker_running, go_on] {
                     blocker_running->set_value();
                     go_on.wait_for(std::chrono::seconds(5));
                   });
  ASSERT_EQ(q_->Change(Timer(1, 50)), 0);
  ASSERT_EQ(running.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  // The knote's callback is now dispatched and waits behind the blocker.
  const int restart_error = q_->Change(Timer(1, 1, NOTE_SECONDS));
  restarted.set_value();
  ASSERT_EQ(restart_error, 0);
  EXPECT_TRUE(q_->Collect(8, 300).empty());
}

TEST_F(TimerFilterTest, TinyPeriodIsCountedExactly) {
  // A 1 ns period cannot wake the loop every nanosecond, but the count is
  // still in nanoseconds elapsed.
  const auto start = SteadyClock::now();
  ASSERT_EQ(q_->Change(Timer(1, 1, NOTE_NSECONDS)), 0);
  SleepMs(50);
  auto evs = q_->Collect(8, 0);
  const long elapsed = MsSince(start);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(evs[0].data, 40 * 1000000);
  EXPECT_LE(evs[0].data, (elapsed + 1) * 1000000);
}

TEST_F(TimerFilterTest, OneshotFiresOnceThenIsGone) {
  ASSERT_EQ(q_->Change(Timer(3, 10, 0, EV_ADD | EV_ONESHOT)), 0);
  auto evs = q_->Collect(8, 2000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 1);
  EXPECT_TRUE(evs[0].flags & EV_ONESHOT);
  EXPECT_EQ(q_->Change(Timer(3, 0, 0, EV_DELETE)), ENOENT);
  EXPECT_TRUE(q_->Collect(8, 60).empty());
  EXPECT_EQ(TimersInUse(), 0u);
}

TEST_F(TimerFilterTest, LateOneshotStillCountsOne) {
  // The loop runs the expiry 60 ms late (six periods): a periodic knote
  // counts the periods it missed, a one-shot one expired once (the seed
  // does not re-arm its callout).
  ASSERT_EQ(q_->Change(Timer(4, 10, 0, EV_ADD | EV_ONESHOT)), 0);
  rt_.get()->reactor().Post([] { usleep(70 * 1000); });
  auto evs = q_->Collect(8, 2000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 1);
}

TEST_F(TimerFilterTest, SecondsDoNotFireEarly) {
  const auto start = SteadyClock::now();
  ASSERT_EQ(q_->Change(Timer(1, 1, NOTE_SECONDS)), 0);
  EXPECT_TRUE(q_->Collect(8, 300).empty());
  auto evs = q_->Collect(8, 3000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(MsSince(start), 1000);
}

TEST_F(TimerFilterTest, UnitsScale) {
  struct Case {
    uint32_t unit;
    int64_t data;  // 50 ms in `unit`
  };
  const Case cases[] = {{NOTE_MSECONDS, 50},
                        {NOTE_USECONDS, 50000},
                        {NOTE_NSECONDS, 50000000}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.unit);
    const auto start = SteadyClock::now();
    ASSERT_EQ(q_->Change(Timer(9, c.data, c.unit, EV_ADD | EV_ONESHOT)), 0);
    auto evs = q_->Collect(8, 2000);
    const long elapsed = MsSince(start);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_GE(elapsed, 50);
    EXPECT_LT(elapsed, 1000);  // not a thousand times the period
  }
}

TEST_F(TimerFilterTest, AbstimeInThePastFiresAtOnceWithDataOne) {
  const int64_t past_s = RealtimeMs() / 1000 - 10;
  ASSERT_EQ(q_->Change(Timer(1, past_s, NOTE_ABSTIME | NOTE_SECONDS)), 0);
  ASSERT_EQ(q_->Change(Timer(2, 0, NOTE_ABSTIME)), 0);    // the epoch
  ASSERT_EQ(q_->Change(Timer(3, -5, NOTE_ABSTIME)), 0);   // before it
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 3u);
  for (const kq_kevent& ev : evs) {
    EXPECT_EQ(ev.data, 1);
    // NetBSD implies EV_CLEAR for relative timers only.
    EXPECT_EQ(ev.flags & (EV_ADD | EV_CLEAR), EV_ADD);
  }
  // Level-triggered: a fired absolute timer stays triggered, with data 1.
  for (int i = 0; i < 3; i++) {
    evs = q_->Collect(8, 0);
    ASSERT_EQ(evs.size(), 3u);
    for (const kq_kevent& ev : evs) EXPECT_EQ(ev.data, 1);
  }
}

TEST_F(TimerFilterTest, AbstimeWithEvClearFiresOnce) {
  const int64_t past_s = RealtimeMs() / 1000 - 10;
  ASSERT_EQ(q_->Change(Timer(1, past_s, NOTE_ABSTIME | NOTE_SECONDS, EV_ADD | EV_CLEAR)), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].flags & EV_CLEAR, EV_CLEAR);
  EXPECT_TRUE(q_->Collect(8, 100).empty());  // once only
}

TEST_F(TimerFilterTest, RelativeTimerImpliesEvClear) {
  ASSERT_EQ(q_->Change(Timer(1, 1)), 0);
  auto evs = q_->Collect(8, 2000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].flags & (EV_ADD | EV_CLEAR), EV_ADD | EV_CLEAR);
}

TEST_F(TimerFilterTest, AbstimeInTheFutureFiresThenOnce) {
  const auto start = SteadyClock::now();
  ASSERT_EQ(q_->Change(Timer(1, RealtimeMs() + 100, NOTE_ABSTIME)), 0);
  auto evs = q_->Collect(8, 3000);
  const long elapsed = MsSince(start);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 1);
  EXPECT_GE(elapsed, 90);  // realtime ms rounding aside, not early
  EXPECT_LT(elapsed, 2000);
  // No EV_CLEAR asked, none implied: still triggered, still data 1.
  evs = q_->Collect(8, 150);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 1);
}

TEST_F(TimerFilterTest, ZeroOrNegativePeriodIsEinval) {
  EXPECT_EQ(q_->Change(Timer(1, 0)), EINVAL);
  EXPECT_EQ(q_->Change(Timer(1, -5)), EINVAL);
  EXPECT_EQ(q_->Change(Timer(1, 0, NOTE_SECONDS)), EINVAL);
  EXPECT_EQ(q_->Change(Timer(1, INT64_MIN, NOTE_NSECONDS)), EINVAL);
  EXPECT_EQ(q_->Change(Timer(1, 0, 0, EV_DELETE)), ENOENT);  // nothing added
  EXPECT_EQ(TimersInUse(), 0u);

  // The same through an EV_RECEIPT / EV_ERROR entry.
  std::vector<kq_kevent> out;
  timespec zero{};
  int err = 0;
  ASSERT_EQ(q_->Kevent({Timer(4, 0, 0, EV_ADD | EV_RECEIPT, 99)}, &out, 4, &zero, &err), 1);
  EXPECT_EQ(err, 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].ident, 4u);
  EXPECT_TRUE(out[0].flags & EV_ERROR);
  EXPECT_EQ(out[0].data, EINVAL);
  EXPECT_EQ(out[0].udata, 99u);
  // And as the call's error when there is no room for the entry.
  EXPECT_EQ(q_->Kevent({Timer(4, -1)}, nullptr, 0, nullptr, &err), -1);
  EXPECT_EQ(err, EINVAL);
}

TEST_F(TimerFilterTest, UnknownFflagsAreEinval) {
  EXPECT_EQ(q_->Change(Timer(1, 10, 0x4)), EINVAL);
  EXPECT_EQ(q_->Change(Timer(1, 10, 0x100)), EINVAL);
  EXPECT_EQ(q_->Change(Timer(1, 10, NOTE_TRIGGER)), EINVAL);
  EXPECT_EQ(TimersInUse(), 0u);
}

TEST_F(TimerFilterTest, HugePeriodsAreClampedNotWrapped) {
  // INT64_MAX seconds would overflow nanoseconds: it must be a very long
  // timer, not an invalid or an immediate one.
  ASSERT_EQ(q_->Change(Timer(1, INT64_MAX, NOTE_SECONDS)), 0);
  ASSERT_EQ(q_->Change(Timer(2, INT64_MAX / 1000 + 7, NOTE_MSECONDS)), 0);
  ASSERT_EQ(q_->Change(Timer(3, INT64_MAX, NOTE_ABSTIME | NOTE_SECONDS)), 0);
  ASSERT_EQ(q_->Change(Timer(4, INT64_MAX, NOTE_NSECONDS)), 0);
  EXPECT_TRUE(q_->Collect(8, 100).empty());
  EXPECT_EQ(TimersInUse(), 4u);
}

TEST_F(TimerFilterTest, ReAddRestartsTheTimer) {
  const auto start = SteadyClock::now();
  ASSERT_EQ(q_->Change(Timer(1, 200)), 0);
  SleepMs(150);
  ASSERT_EQ(q_->Change(Timer(1, 200)), 0);
  auto evs = q_->Collect(8, 3000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(MsSince(start), 350);
  EXPECT_EQ(evs[0].data, 1);
  EXPECT_EQ(TimersInUse(), 1u);  // the same timer, charged once
}

TEST_F(TimerFilterTest, ReAddResetsTheCountAndTakesTheNewPeriod) {
  ASSERT_EQ(q_->Change(Timer(1, 10)), 0);
  SleepMs(80);  // several expirations pending (and the knote queued)
  ASSERT_EQ(q_->Change(Timer(1, 1, NOTE_SECONDS)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());    // count dropped
  EXPECT_TRUE(q_->Collect(8, 200).empty());  // new period in force
}

TEST_F(TimerFilterTest, BadReAddKeepsTheOldTimer) {
  ASSERT_EQ(q_->Change(Timer(1, 20, 0, EV_ADD, 5)), 0);
  EXPECT_EQ(q_->Change(Timer(1, 0, 0, EV_ADD, 6)), EINVAL);
  EXPECT_EQ(q_->Change(Timer(1, 20, 0x8, EV_ADD, 6)), EINVAL);
  auto evs = q_->Collect(8, 2000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].udata, 5u);
}

TEST_F(TimerFilterTest, StaleCallbacksAfterRestartAreIgnored) {
  // Restart a 1 ms timer many times while it keeps firing: callbacks of the
  // old arms that were already on their way must not count.
  for (int i = 0; i < 200; i++) {
    ASSERT_EQ(q_->Change(Timer(1, 1)), 0);
    if (i % 20 == 0) SleepMs(2);
  }
  ASSERT_EQ(q_->Change(Timer(1, 1, NOTE_SECONDS)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  EXPECT_TRUE(q_->Collect(8, 200).empty());
}

// Fast timers (period below 10 ms) share their user's slice of the loop:
// each is charged as one, and with n of them each is delivered at most every
// n x kTimerMinWakeupNs, with the count still exact.
TEST_F(TimerFilterTest, FastTimersShareTheirUsersWakeups) {
  auto fast = [&] { return rt_.get()->limits().InUse(getuid(), kqd::Resource::kFastTimers); };
  constexpr int kFast = 200;  // floor: 200 x 250 us = 50 ms per timer
  for (int i = 1; i <= kFast; i++) ASSERT_EQ(q_->Change(Timer(i, 1, NOTE_USECONDS)), 0);
  EXPECT_EQ(fast(), static_cast<uint64_t>(kFast));
  ASSERT_EQ(q_->Change(Timer(1000, 1, NOTE_SECONDS)), 0);  // slow: not charged
  EXPECT_EQ(fast(), static_cast<uint64_t>(kFast));
  // Drain the first round (armed while the count was still growing), then
  // count deliveries of timer 1 over 300 ms: about 6, never hundreds.
  SleepMs(120);
  q_->Collect(kFast + 1, 0);
  const auto start = SteadyClock::now();
  int deliveries = 0;
  int64_t expirations = 0;
  while (MsSince(start) < 300) {
    for (const kq_kevent& ev : q_->Collect(kFast + 1, 20)) {
      if (ev.ident != 1) continue;
      deliveries++;
      expirations += ev.data;
    }
  }
  EXPECT_LE(deliveries, 10);
  EXPECT_GE(deliveries, 3);
  EXPECT_GE(expirations, 150 * 1000);  // 1 us periods, counted exactly
  // Slowing a timer down gives its fast charge back; deleting gives all back.
  ASSERT_EQ(q_->Change(Timer(1, 1, NOTE_SECONDS)), 0);
  EXPECT_EQ(fast(), static_cast<uint64_t>(kFast - 1));
  for (int i = 1; i <= kFast; i++) ASSERT_EQ(q_->Change(Timer(i, 0, 0, EV_DELETE)), 0);
  ASSERT_EQ(q_->Change(Timer(1000, 0, 0, EV_DELETE)), 0);
  EXPECT_EQ(fast(), 0u);
  EXPECT_EQ(TimersInUse(), 0u);
}

TEST_F(TimerFilterTest, UdataIsReturnedBitExact) {
  const uint64_t values[] = {0, 1, 0x8000000000000001ULL, 0xffffffffffffffffULL,
                             0xdeadbeefcafef00dULL};
  uint64_t ident = 1;
  for (uint64_t v : values) {
    ASSERT_EQ(q_->Change(Timer(ident++, 5, 0, EV_ADD | EV_ONESHOT, v)), 0);
  }
  std::multiset<uint64_t> got;
  const auto start = SteadyClock::now();
  while (got.size() < 5 && MsSince(start) < 3000) {
    for (const kq_kevent& ev : q_->Collect(8, 500)) got.insert(ev.udata);
  }
  EXPECT_EQ(got, std::multiset<uint64_t>(std::begin(values), std::end(values)));
}

TEST_F(TimerFilterTest, IdentsAreIndependent) {
  ASSERT_EQ(q_->Change(Timer(1, 10)), 0);
  ASSERT_EQ(q_->Change(Timer(0xffffffffffffffffULL, 1, NOTE_SECONDS)), 0);
  auto evs = q_->Collect(8, 2000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].ident, 1u);
  ASSERT_EQ(q_->Change(Timer(1, 0, 0, EV_DELETE)), 0);
  ASSERT_EQ(q_->Change(Timer(0xffffffffffffffffULL, 0, 0, EV_DELETE)), 0);
  EXPECT_EQ(TimersInUse(), 0u);
}

TEST_F(TimerFilterTest, DisabledTimerKeepsCountingAndEnableReportsIt) {
  ASSERT_EQ(q_->Change(Timer(1, 20)), 0);
  ASSERT_EQ(q_->Change(Timer(1, 0, 0, EV_DISABLE)), 0);
  SleepMs(110);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  ASSERT_EQ(q_->Change(Timer(1, 0, 0, EV_ENABLE)), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(evs[0].data, 4);
  // And it runs on normally afterwards.
  evs = q_->Collect(8, 2000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(evs[0].data, 1);
}

TEST_F(TimerFilterTest, ChangesWithoutEvAddDoNotRestart) {
  // Programs reuse one kevent for EV_DISABLE/EV_ENABLE, fflags still set:
  // only EV_ADD restarts a timer.
  ASSERT_EQ(q_->Change(Timer(1, 10000, NOTE_USECONDS)), 0);
  SleepMs(70);
  ASSERT_EQ(q_->Change(Timer(1, 10000, NOTE_USECONDS, EV_DISABLE)), 0);
  ASSERT_EQ(q_->Change(Timer(1, 10000, NOTE_USECONDS, EV_ENABLE)), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(evs[0].data, 5);
}

TEST_F(TimerFilterTest, DispatchDisablesAfterEachRetrieval) {
  ASSERT_EQ(q_->Change(Timer(1, 10, 0, EV_ADD | EV_DISPATCH)), 0);
  ASSERT_EQ(q_->Collect(8, 2000).size(), 1u);
  EXPECT_TRUE(q_->Collect(8, 60).empty());
  ASSERT_EQ(q_->Change(Timer(1, 0, 0, EV_ENABLE)), 0);
  auto evs = q_->Collect(8, 2000);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_GE(evs[0].data, 1);
}

TEST_F(TimerFilterTest, PerUserLimitIsEnforced) {
  kqd::LimitConfig limits;
  limits.timers = 8;
  TestRuntime rt(limits);
  auto q = rt.NewQueue();
  for (uint64_t i = 1; i <= 8; i++) ASSERT_EQ(q->Change(Timer(i, 1, NOTE_SECONDS)), 0);
  EXPECT_EQ(q->Change(Timer(9, 1, NOTE_SECONDS)), ENOMEM);
  // Re-adding an existing timer needs no new slot.
  EXPECT_EQ(q->Change(Timer(3, 2, NOTE_SECONDS)), 0);
  // The limit is per user, across kqueues.
  auto q2 = rt.NewQueue();
  EXPECT_EQ(q2->Change(Timer(1, 1, NOTE_SECONDS)), ENOMEM);
  // Other filters are not affected.
  EXPECT_EQ(q->Change(Ev(1, EVFILT_USER, EV_ADD)), 0);
  // Deleting one frees a slot.
  ASSERT_EQ(q->Change(Timer(2, 0, 0, EV_DELETE)), 0);
  EXPECT_EQ(q->Change(Timer(9, 1, NOTE_SECONDS)), 0);
  EXPECT_EQ(q->Change(Timer(10, 1, NOTE_SECONDS)), ENOMEM);
  // So does retrieving a oneshot one.
  ASSERT_EQ(q->Change(Timer(4, 0, 0, EV_DELETE)), 0);
  ASSERT_EQ(q->Change(Timer(4, 5, 0, EV_ADD | EV_ONESHOT)), 0);
  ASSERT_EQ(q->Collect(8, 2000).size(), 1u);
  EXPECT_EQ(q->Change(Timer(10, 1, NOTE_SECONDS)), 0);
  EXPECT_EQ(rt.get()->limits().InUse(getuid(), kqd::Resource::kTimers), 8u);
  q->kq().Close();
  EXPECT_EQ(rt.get()->limits().InUse(getuid(), kqd::Resource::kTimers), 0u);
}

TEST_F(TimerFilterTest, ManyTimersShareOneFd) {
  constexpr uint64_t kTimers = 2000;
  const int before = CountOpenFds();
  ASSERT_GT(before, 0);
  std::vector<kq_kevent> changes;
  for (uint64_t i = 0; i < kTimers; i++) changes.push_back(Timer(i, 20 + i % 30));
  int err = 0;
  ASSERT_EQ(q_->Kevent(changes, nullptr, 0, nullptr, &err), 0);
  ASSERT_EQ(err, 0);
  EXPECT_LE(CountOpenFds(), before + 2);  // nothing per timer
  EXPECT_EQ(TimersInUse(), kTimers);

  // And every one of them fires.
  std::set<uint64_t> fired;
  const auto start = SteadyClock::now();
  while (fired.size() < kTimers && MsSince(start) < 10000) {
    for (const kq_kevent& ev : q_->Collect(4096, 500)) {
      EXPECT_GE(ev.data, 1);
      fired.insert(ev.ident);
    }
  }
  EXPECT_EQ(fired.size(), kTimers);
  EXPECT_LE(CountOpenFds(), before + 2);
}

TEST_F(TimerFilterTest, CloseWithTimersArmedIsClean) {
  for (uint64_t i = 0; i < 100; i++) ASSERT_EQ(q_->Change(Timer(i, 1 + i % 5)), 0);
  SleepMs(20);
  q_->kq().Close();
  EXPECT_EQ(TimersInUse(), 0u);
  int err = 0;
  std::vector<kq_kevent> out;
  timespec zero{};
  EXPECT_EQ(q_->Kevent({}, &out, 8, &zero, &err), -1);
  EXPECT_EQ(err, EBADF);
  SleepMs(30);  // callbacks already on their way find nothing to do
  // The runtime is still sound: a new queue's timers work.
  auto q2 = rt_.NewQueue();
  ASSERT_EQ(q2->Change(Timer(1, 5, 0, EV_ADD | EV_ONESHOT)), 0);
  EXPECT_EQ(q2->Collect(8, 2000).size(), 1u);
}

TEST_F(TimerFilterTest, ParkedCallIsWokenByATimer) {
  ASSERT_EQ(q_->Change(Timer(1, 30, 0, EV_ADD | EV_ONESHOT, 42)), 0);
  uint64_t wait_id = 0;
  auto pending = q_->Start(8, nullptr, &wait_id);
  int result = 0, err = 0;
  std::vector<kq_kevent> evs;
  ASSERT_TRUE(TestQueue::WaitFor(pending, 3000, &result, &err, &evs));
  EXPECT_EQ(err, 0);
  ASSERT_EQ(result, 1);
  EXPECT_EQ(evs[0].udata, 42u);
}

}  // namespace
