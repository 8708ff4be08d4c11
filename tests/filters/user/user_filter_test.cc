// EVFILT_USER through the core: triggering, the saved fflags arithmetic,
// EV_CLEAR against level behaviour, EV_DISPATCH, and cross-thread wake-ups.
#include <errno.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"

namespace {

using kqd::testing::Ev;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;

kq_kevent User(uint64_t ident, uint32_t flags, uint32_t fflags = 0,
               int64_t data = 0, uint64_t udata = 0) {
  return Ev(ident, EVFILT_USER, flags, fflags, data, udata);
}

class UserFilterTest : public ::testing::Test {
 protected:
  // Triggers `ident` (no EV_ADD) with `fflags` and collects what that
  // reports, without waiting.
  std::vector<kq_kevent> TriggerAndPoll(uint64_t ident, uint32_t fflags,
                                        int64_t data = 0) {
    EXPECT_EQ(q_->Change(User(ident, 0, NOTE_TRIGGER | fflags, data)), 0);
    return q_->Collect(8, 0);
  }

  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_ = rt_.NewQueue();
};

TEST_F(UserFilterTest, TriggerFires) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR, 0, 0, 0x55)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  auto evs = TriggerAndPoll(1, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].ident, 1u);
  EXPECT_EQ(evs[0].filter, EVFILT_USER);
  EXPECT_EQ(evs[0].flags, EV_ADD | EV_CLEAR);  // as stored (NetBSD)
  EXPECT_EQ(evs[0].fflags, 0u);                // no trigger or control bits
  EXPECT_EQ(evs[0].data, 0);
  EXPECT_EQ(evs[0].udata, 0x55u);
}

TEST_F(UserFilterTest, NotTriggeredDoesNotFire) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD, 0x5, 7)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  // Updates without NOTE_TRIGGER do not fire either.
  ASSERT_EQ(q_->Change(User(1, EV_ADD, NOTE_FFOR | 0x2)), 0);
  ASSERT_EQ(q_->Change(User(1, 0, NOTE_FFCOPY | 0x8)), 0);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  EXPECT_EQ(q_->kq().Pending(), 0u);
}

TEST_F(UserFilterTest, TriggerWithEvAdd) {
  // On the registering change itself, and on a later EV_ADD.
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR, NOTE_TRIGGER | NOTE_FFOR | 0x6)), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0x6u);  // the low 24 bits only
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  ASSERT_EQ(q_->Change(User(1, EV_ADD, NOTE_TRIGGER | NOTE_FFCOPY | 0x3, 11)), 0);
  evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0x3u);
  EXPECT_EQ(evs[0].data, 11);
}

TEST_F(UserFilterTest, TriggerOnUnknownIdentIsEnoent) {
  EXPECT_EQ(q_->Change(User(1, 0, NOTE_TRIGGER)), ENOENT);
  ASSERT_EQ(q_->Change(User(1, EV_ADD)), 0);
  EXPECT_EQ(q_->Change(User(2, 0, NOTE_TRIGGER)), ENOENT);
}

TEST_F(UserFilterTest, RegistrationSavesItsFflags) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR, 0xABCDEF)), 0);
  auto evs = TriggerAndPoll(1, 0);  // FFNOP: keep
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0xABCDEFu);
}

TEST_F(UserFilterTest, FflagsArithmetic) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR)), 0);
  struct Step {
    uint32_t fflags;
    uint32_t expect;
  };
  const Step steps[] = {
      {NOTE_FFCOPY | 0xF0, 0xF0},      // copy
      {NOTE_FFOR | 0x0F, 0xFF},        // or
      {NOTE_FFAND | 0x3C, 0x3C},       // and
      {NOTE_FFNOP | 0x01, 0x3C},       // nop: the bits are ignored
      {NOTE_FFOR | 0xFFFFFF, 0xFFFFFF},
      {NOTE_FFAND | 0x800001, 0x800001},
      {NOTE_FFCOPY, 0x0},              // copy of nothing
      {NOTE_FFOR | 0x123456, 0x123456},
  };
  for (const Step& s : steps) {
    SCOPED_TRACE(s.fflags);
    auto evs = TriggerAndPoll(1, s.fflags);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].fflags, s.expect);
    EXPECT_EQ(evs[0].fflags & ~NOTE_FFLAGSMASK, 0u);
  }
}

TEST_F(UserFilterTest, UpdatesWithoutTriggerAreSavedForTheNextOne) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR, 0x10)), 0);
  ASSERT_EQ(q_->Change(User(1, 0, NOTE_FFOR | 0x01)), 0);
  ASSERT_EQ(q_->Change(User(1, EV_ADD, NOTE_FFOR | 0x100)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  auto evs = TriggerAndPoll(1, 0, 99);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0x111u);
  EXPECT_EQ(evs[0].data, 99);  // data: the triggering change's
}

TEST_F(UserFilterTest, ClearResetsTriggerButKeepsSavedFflags) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR)), 0);
  auto evs = TriggerAndPoll(1, NOTE_FFCOPY | 0x42, 5);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0x42u);
  EXPECT_TRUE(q_->Collect(8, 0).empty());  // reset by the retrieval
  // Updates without NOTE_TRIGGER do not revive it.
  ASSERT_EQ(q_->Change(User(1, 0, NOTE_FFOR | 0x2)), 0);
  ASSERT_EQ(q_->Change(User(1, EV_ADD, NOTE_FFAND | 0x42)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  evs = TriggerAndPoll(1, 0, 6);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0x42u);
  EXPECT_EQ(evs[0].data, 6);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
}

TEST_F(UserFilterTest, WithoutClearItStaysTriggered) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD, 0x7)), 0);
  auto evs = TriggerAndPoll(1, 0, 3);
  ASSERT_EQ(evs.size(), 1u);
  for (int i = 0; i < 3; i++) {
    evs = q_->Collect(8, 0);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].fflags, 0x7u);
    EXPECT_EQ(evs[0].data, 3);
  }
  // A later change's values show up in the level event.
  ASSERT_EQ(q_->Change(User(1, 0, NOTE_FFCOPY | 0x9, 4)), 0);
  evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0x9u);
  EXPECT_EQ(evs[0].data, 4);
  ASSERT_EQ(q_->Change(User(1, EV_DELETE)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
}

TEST_F(UserFilterTest, AddDoesNotResetATriggeredEvent) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR)), 0);
  ASSERT_EQ(q_->Change(User(1, 0, NOTE_TRIGGER)), 0);
  ASSERT_EQ(q_->Change(User(1, EV_ADD, NOTE_FFOR | 0x4)), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0x4u);
}

TEST_F(UserFilterTest, DispatchAndReenable) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR | EV_DISPATCH)), 0);
  ASSERT_EQ(TriggerAndPoll(1, 0).size(), 1u);
  // Disabled now: a trigger is held back...
  EXPECT_TRUE(TriggerAndPoll(1, NOTE_FFCOPY | 0x21, 8).empty());
  EXPECT_EQ(q_->kq().Pending(), 0u);
  // ...and delivered by EV_ENABLE, once.
  ASSERT_EQ(q_->Change(User(1, EV_ENABLE)), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0x21u);
  EXPECT_EQ(evs[0].data, 8);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  // Enabling without a new trigger reports nothing.
  ASSERT_EQ(q_->Change(User(1, EV_ENABLE)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  // Re-enabled: the next trigger comes straight through.
  ASSERT_EQ(TriggerAndPoll(1, 0).size(), 1u);
}

TEST_F(UserFilterTest, DisableHoldsATriggerUntilEnable) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR)), 0);
  ASSERT_EQ(q_->Change(User(1, EV_DISABLE)), 0);
  EXPECT_TRUE(TriggerAndPoll(1, 0).empty());
  ASSERT_EQ(q_->Change(User(1, EV_ENABLE)), 0);
  EXPECT_EQ(q_->Collect(8, 0).size(), 1u);
}

TEST_F(UserFilterTest, OneshotIsDeletedAfterRetrieval) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_ONESHOT, 0x1)), 0);
  auto evs = TriggerAndPoll(1, 0, 2);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].fflags, 0x1u);
  EXPECT_EQ(evs[0].data, 2);
  EXPECT_EQ(q_->Change(User(1, EV_DELETE)), ENOENT);
}

TEST_F(UserFilterTest, TriggerFromAnotherThreadWakesAParkedCall) {
  ASSERT_EQ(q_->Change(User(1, EV_ADD | EV_CLEAR, 0, 0, 0xfeed)), 0);
  uint64_t wait_id = 0;
  auto pending = q_->Start(8, nullptr, &wait_id);
  EXPECT_NE(wait_id, 0u);  // parked: nothing was triggered yet
  std::thread trigger([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    EXPECT_EQ(q_->Change(User(1, 0, NOTE_TRIGGER | NOTE_FFCOPY | 0x77, 12)), 0);
  });
  int result = 0, err = 0;
  std::vector<kq_kevent> evs;
  const bool answered = TestQueue::WaitFor(pending, 5000, &result, &err, &evs);
  trigger.join();
  ASSERT_TRUE(answered);
  EXPECT_EQ(err, 0);
  ASSERT_EQ(result, 1);
  EXPECT_EQ(evs[0].ident, 1u);
  EXPECT_EQ(evs[0].fflags, 0x77u);
  EXPECT_EQ(evs[0].data, 12);
  EXPECT_EQ(evs[0].udata, 0xfeedu);
}

TEST_F(UserFilterTest, UdataIsReturnedBitExact) {
  const uint64_t values[] = {0, 1, 0x8000000000000000ULL, 0xffffffffffffffffULL,
                             0x0123456789abcdefULL};
  uint64_t ident = 0xffffffffffffffffULL;  // any ident, the largest too
  for (uint64_t v : values) {
    SCOPED_TRACE(v);
    ASSERT_EQ(q_->Change(User(ident, EV_ADD | EV_CLEAR, 0, 0, v)), 0);
    // A trigger without EV_ADD leaves udata as registered.
    auto evs = TriggerAndPoll(ident, 0);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].ident, ident);
    EXPECT_EQ(evs[0].udata, v);
    ASSERT_EQ(q_->Change(User(ident, EV_DELETE)), 0);
    ident--;
  }
}

TEST_F(UserFilterTest, ManyIdentsAreIndependent) {
  for (uint64_t i = 0; i < 100; i++) ASSERT_EQ(q_->Change(User(i, EV_ADD | EV_CLEAR)), 0);
  for (uint64_t i = 0; i < 100; i += 2) {
    ASSERT_EQ(q_->Change(User(i, 0, NOTE_TRIGGER | NOTE_FFCOPY | static_cast<uint32_t>(i))), 0);
  }
  auto evs = q_->Collect(200, 0);
  ASSERT_EQ(evs.size(), 50u);
  for (const kq_kevent& ev : evs) {
    EXPECT_EQ(ev.ident % 2, 0u);
    EXPECT_EQ(ev.fflags, ev.ident);
  }
}

}  // namespace
