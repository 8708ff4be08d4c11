// kqueue_register's rules: EV_ADD, update, DELETE, ENABLE/DISABLE, flags
// stored as given, EV_SYSFLAGS masked, errors and EV_RECEIPT.
#include <errno.h>

#include "gtest/gtest.h"
#include "tests/support/core_test_support.h"
#include "tests/support/manual_filter.h"

namespace kqd {
namespace testing {
namespace {

using RegistrationTest = ManualFilterTest;

TEST_F(RegistrationTest, AddEvaluatesAtOnce) {
  filter_->Set(1, 5);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD, 0, 0, 77)), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].ident, 1u);
  EXPECT_EQ(evs[0].filter, m_);
  EXPECT_EQ(evs[0].data, 5);
  EXPECT_EQ(evs[0].udata, 77u);
  EXPECT_EQ(evs[0].flags, EV_ADD);  // NetBSD reports flags as stored
}

TEST_F(RegistrationTest, AddWithFalseConditionReportsNothing) {
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  filter_->Set(1, 3);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 3);
}

TEST_F(RegistrationTest, SecondAddUpdatesSavedValuesAndUdataOnly) {
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD | EV_ONESHOT, 0x11, 0, 1)), 0);
  // The second EV_ADD neither changes ONESHOT nor adds a knote.
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD, 0x22, 9, 2)), 0);
  EXPECT_EQ(filter_->attaches, 1);
  filter_->Set(1, 1);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].udata, 2u);
  EXPECT_EQ(evs[0].fflags, 0x22u);  // saved fflags updated
  EXPECT_TRUE(evs[0].flags & EV_ONESHOT);
  // Still oneshot: gone after retrieval.
  EXPECT_EQ(q_->Change(Ev(1, m_, EV_DELETE)), ENOENT);
}

TEST_F(RegistrationTest, AddOnDisabledKnoteDoesNotEnable) {
  filter_->Set(1, 1);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD | EV_DISABLE)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD)), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ENABLE)), 0);
  EXPECT_EQ(q_->Collect(8, 0).size(), 1u);
}

TEST_F(RegistrationTest, DisabledKnoteStaysActiveAndIsQueuedOnEnable) {
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD | EV_CLEAR)), 0);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_DISABLE)), 0);
  filter_->Set(1, 4);  // fires while disabled
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  EXPECT_EQ(q_->kq().Pending(), 0u);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ENABLE)), 0);
  EXPECT_EQ(q_->kq().Pending(), 1u);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 4);
}

TEST_F(RegistrationTest, DeleteRemovesAndDetaches) {
  filter_->Set(1, 1);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD)), 0);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_DELETE)), 0);
  EXPECT_EQ(filter_->detaches, 1);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  EXPECT_EQ(q_->Change(Ev(1, m_, EV_DELETE)), ENOENT);
}

TEST_F(RegistrationTest, KnotesKeyedByIdentAndFilter) {
  uint32_t other = 0;
  ASSERT_EQ(rt_.get()->filters().Register("MANUAL2", std::make_shared<ManualFilter>(), &other), 0);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD)), 0);
  ASSERT_EQ(q_->Change(Ev(2, m_, EV_ADD)), 0);
  ASSERT_EQ(q_->Change(Ev(1, other, EV_ADD)), 0);
  EXPECT_EQ(filter_->attaches, 2);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_DELETE)), 0);
  EXPECT_EQ(q_->Change(Ev(1, other, EV_DELETE)), 0);
  EXPECT_EQ(q_->Change(Ev(2, m_, EV_DELETE)), 0);
}

TEST_F(RegistrationTest, SysflagsAreMaskedOnInput) {
  filter_->Set(1, 1);
  ASSERT_EQ(q_->Change(Ev(1, m_, EV_ADD | EV_EOF | EV_ERROR | EV_FLAG1)), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].flags & EV_SYSFLAGS, 0u);
}

TEST_F(RegistrationTest, ModifyOrDeleteMissingIsEnoent) {
  EXPECT_EQ(q_->Change(Ev(5, m_, EV_DELETE)), ENOENT);
  EXPECT_EQ(q_->Change(Ev(5, m_, EV_ENABLE)), ENOENT);
  EXPECT_EQ(q_->Change(Ev(5, m_, EV_DISABLE)), ENOENT);
}

TEST_F(RegistrationTest, UnknownFilterIsEinval) {
  EXPECT_EQ(q_->Change(Ev(1, 4242, EV_ADD)), EINVAL);
  EXPECT_EQ(q_->Change(Ev(1, 0xffffffffu, EV_ADD)), EINVAL);
}

TEST_F(RegistrationTest, ChangesWithoutAddNameAKnownFilterFirst) {
  // The seed looks the filter up before the knote: EINVAL, not ENOENT.
  EXPECT_EQ(q_->Change(Ev(1, 4242, EV_DELETE)), EINVAL);
  EXPECT_EQ(q_->Change(Ev(1, 4242, EV_ENABLE)), EINVAL);
  EXPECT_EQ(q_->Change(Ev(1, EVFILT_AIO, EV_DISABLE)), EINVAL);
}

TEST_F(RegistrationTest, UnimplementedSystemFiltersAreEinval) {
  EXPECT_EQ(q_->Change(Ev(1, EVFILT_AIO, EV_ADD)), EINVAL);
}

TEST_F(RegistrationTest, AttachErrorIsReturned) {
  EXPECT_EQ(q_->Change(Ev(ManualFilter::kFailingIdent, m_, EV_ADD)), ENXIO);
  EXPECT_EQ(q_->Change(Ev(ManualFilter::kFailingIdent, m_, EV_DELETE)), ENOENT);
}

TEST_F(RegistrationTest, ErrorsBecomeEntriesAndLaterChangesStillApply) {
  filter_->Set(2, 1);
  std::vector<kq_kevent> out;
  int err = 0;
  int n = q_->Kevent({Ev(9, m_, EV_DELETE, 0, 0, 99), Ev(2, m_, EV_ADD),
                      Ev(1, 4242, EV_ADD, 0, 0, 98)},
                     &out, 8, nullptr, &err);
  ASSERT_EQ(n, 2);  // two error entries, no events collected
  EXPECT_EQ(out[0].flags, EV_ERROR);
  EXPECT_EQ(out[0].data, ENOENT);
  EXPECT_EQ(out[0].ident, 9u);
  EXPECT_EQ(out[0].udata, 99u);
  EXPECT_EQ(out[1].data, EINVAL);
  EXPECT_EQ(out[1].udata, 98u);
  // The change between them was applied: its event is there now.
  EXPECT_EQ(q_->Collect(8, 0).size(), 1u);
}

TEST_F(RegistrationTest, ErrorWithoutRoomFailsAndStops) {
  int err = 0;
  std::vector<kq_kevent> out;
  int n = q_->Kevent({Ev(1, m_, EV_ADD), Ev(9, m_, EV_DELETE),
                      Ev(2, m_, EV_ADD)},
                     &out, 0, nullptr, &err);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(err, ENOENT);
  EXPECT_EQ(q_->Change(Ev(1, m_, EV_DELETE)), 0);       // applied
  EXPECT_EQ(q_->Change(Ev(2, m_, EV_DELETE)), ENOENT);  // not applied
}

TEST_F(RegistrationTest, ErrorsFillTheListThenTheCallFails) {
  int err = 0;
  std::vector<kq_kevent> out;
  int n = q_->Kevent({Ev(8, m_, EV_DELETE), Ev(9, m_, EV_DELETE),
                      Ev(2, m_, EV_ADD)},
                     &out, 1, nullptr, &err);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(err, ENOENT);
  EXPECT_EQ(q_->Change(Ev(2, m_, EV_DELETE)), ENOENT);
}

TEST_F(RegistrationTest, ReceiptAnswersEveryChangeWithoutCollecting) {
  filter_->Set(1, 1);
  std::vector<kq_kevent> out;
  int n = q_->Kevent({Ev(1, m_, EV_ADD | EV_RECEIPT, 0, 0, 5),
                      Ev(7, m_, EV_DELETE | EV_RECEIPT, 0, 0, 6)},
                     &out, 8, nullptr);
  ASSERT_EQ(n, 2);
  EXPECT_EQ(out[0].flags, EV_ERROR);
  EXPECT_EQ(out[0].data, 0);
  EXPECT_EQ(out[0].udata, 5u);
  EXPECT_EQ(out[1].flags, EV_ERROR);
  EXPECT_EQ(out[1].data, ENOENT);
  // The event is still pending: receipts collected nothing.
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].flags, EV_ADD | EV_RECEIPT);
}

TEST_F(RegistrationTest, ReceiptWithoutRoomStopsAndReturnsZero) {
  int err = -1;
  std::vector<kq_kevent> out;
  int n = q_->Kevent({Ev(1, m_, EV_ADD | EV_RECEIPT), Ev(2, m_, EV_ADD)},
                     &out, 0, nullptr, &err);
  EXPECT_EQ(n, 0);
  EXPECT_EQ(err, 0);
  EXPECT_EQ(q_->Change(Ev(2, m_, EV_DELETE)), ENOENT);
}

TEST(FilterRegistryTest, RegisterUnregisterRules) {
  TestRuntime rt;
  FilterRegistry& r = rt.get()->filters();
  auto f = std::make_shared<ManualFilter>();
  uint32_t a = 0, b = 0, found = 0;
  ASSERT_EQ(r.Register("A", f, &a), 0);
  EXPECT_EQ(a, EVFILT_SYSCOUNT);
  EXPECT_EQ(r.Register("A", f, &b), EEXIST);
  EXPECT_EQ(r.Register("EVFILT_READ", f, &b), EEXIST);
  EXPECT_EQ(r.Register("", f, &b), EINVAL);
  EXPECT_EQ(r.Register(std::string(KFILTER_MAXNAME, 'x'), f, &b), EINVAL);
  EXPECT_EQ(r.Unregister("EVFILT_TIMER"), EINVAL);
  EXPECT_EQ(r.Unregister("NOPE"), ENOENT);
  EXPECT_EQ(r.NumberOf("A", &found), 0);
  EXPECT_EQ(found, a);
  std::string name;
  EXPECT_EQ(r.NameOf(EVFILT_AIO, &name), 0);
  EXPECT_EQ(name, "EVFILT_AIO");
  EXPECT_EQ(r.NameOf(4242, &name), ENOENT);
  EXPECT_EQ(r.NumberOf("NOPE", &found), ENOENT);

  // Busy while a knote uses it.
  auto q = rt.NewQueue();
  ASSERT_EQ(q->Change(Ev(1, a, EV_ADD)), 0);
  EXPECT_EQ(r.Unregister("A"), EBUSY);
  ASSERT_EQ(q->Change(Ev(1, a, EV_DELETE)), 0);
  EXPECT_EQ(r.Unregister("A"), 0);
  EXPECT_EQ(r.NumberOf("A", &found), ENOENT);
  EXPECT_EQ(q->Change(Ev(1, a, EV_ADD)), EINVAL);
  // Numbers are never reused.
  ASSERT_EQ(r.Register("A", f, &b), 0);
  EXPECT_EQ(b, a + 1);
}

TEST(FilterRegistryTest, EveryNetBsdSystemFilterIsNamed) {
  TestRuntime rt;
  const char* names[] = {"EVFILT_READ",  "EVFILT_WRITE", "EVFILT_AIO",
                         "EVFILT_VNODE", "EVFILT_PROC",  "EVFILT_SIGNAL",
                         "EVFILT_TIMER", "EVFILT_FS",    "EVFILT_USER",
                         "EVFILT_EMPTY"};
  for (uint32_t i = 0; i < EVFILT_SYSCOUNT; i++) {
    std::string name;
    ASSERT_EQ(rt.get()->filters().NameOf(i, &name), 0);
    EXPECT_EQ(name, names[i]);
    uint32_t n = 99;
    ASSERT_EQ(rt.get()->filters().NumberOf(names[i], &n), 0);
    EXPECT_EQ(n, i);
  }
}

TEST(UserLimitsTest, KnoteAndKqueueCeilings) {
  LimitConfig cfg;
  cfg.knotes = 3;
  cfg.kqueues = 2;
  TestRuntime rt(cfg);
  auto f = std::make_shared<ManualFilter>();
  uint32_t m = 0;
  ASSERT_EQ(rt.get()->filters().Register("M", f, &m), 0);
  auto q = rt.NewQueue();
  for (int i = 0; i < 3; i++) ASSERT_EQ(q->Change(Ev(i, m, EV_ADD)), 0);
  EXPECT_EQ(q->Change(Ev(3, m, EV_ADD)), ENOMEM);
  ASSERT_EQ(q->Change(Ev(0, m, EV_DELETE)), 0);
  EXPECT_EQ(q->Change(Ev(3, m, EV_ADD)), 0);

  auto q2 = rt.NewQueue();
  int err = 0;
  EXPECT_EQ(Kqueue::Create(rt.get(), getuid(), &err), nullptr);
  EXPECT_EQ(err, EMFILE);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
