// ManualFilter: a filter whose condition the test sets by hand, registered
// at run time like a plug-in. It lets the core's rules be tested without
// depending on any real event source.
#ifndef KQUEUED_TESTS_SUPPORT_MANUAL_FILTER_H_
#define KQUEUED_TESTS_SUPPORT_MANUAL_FILTER_H_

#include <errno.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/core/filter_ops.h"
#include "daemon/core/knote.h"
#include "gtest/gtest.h"
#include "tests/support/core_test_support.h"

namespace kqd {
namespace testing {

class ManualFilter : public FilterOps {
 public:
  // Attach fails with ENXIO for this ident.
  static constexpr uint64_t kFailingIdent = 1000000;

  int Attach(Knote& kn) override {
    if (kn.kev.ident == kFailingIdent) return ENXIO;
    std::lock_guard<std::mutex> l(mu_);
    knotes_[kn.kev.ident].push_back(kn.weak_from_this());
    attaches++;
    return 0;
  }
  void Detach(Knote& kn) override { detaches++; }
  bool Event(Knote& kn, long hint) override {
    evaluations++;
    if (slow_event_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(slow_event_us));
    int64_t level;
    {
      std::lock_guard<std::mutex> l(mu_);
      level = levels_[kn.kev.ident];
    }
    // A filter that is slow after looking at its source: the condition
    // may change before the evaluation returns.
    if (int us = pause_after_read_us.load(); us > 0) {
      in_pause++;
      std::this_thread::sleep_for(std::chrono::microseconds(us));
    }
    kn.kev.data = level;
    kn.kev.fflags = kn.sfflags;
    return level != 0;
  }

  // Sets ident's condition (0 = false) and notifies its knotes.
  void Set(uint64_t ident, int64_t level) {
    std::vector<std::weak_ptr<Knote>> targets;
    {
      std::lock_guard<std::mutex> l(mu_);
      levels_[ident] = level;
      targets = knotes_[ident];
    }
    for (auto& w : targets) Knote::Notify(w, 1);
  }

  // Changes the condition without telling anyone: only re-evaluation sees it.
  void level_without_notify(uint64_t ident, int64_t level) {
    std::lock_guard<std::mutex> l(mu_);
    levels_[ident] = level;
  }

  std::atomic<int> attaches{0};
  std::atomic<int> detaches{0};
  std::atomic<int> evaluations{0};
  std::atomic<int> slow_event_us{0};
  // Sleep between reading the condition and returning (see Event).
  std::atomic<int> pause_after_read_us{0};
  // Evaluations that reached that sleep.
  std::atomic<int> in_pause{0};

 private:
  std::mutex mu_;  // guards levels_ and knotes_
  std::map<uint64_t, int64_t> levels_;
  std::map<uint64_t, std::vector<std::weak_ptr<Knote>>> knotes_;
};

// A runtime with a ManualFilter registered as "MANUAL" (number m_), and one
// queue: the fixture of the core's rule tests.
class ManualFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    filter_ = std::make_shared<ManualFilter>();
    ASSERT_EQ(rt_.get()->filters().Register("MANUAL", filter_, &m_), 0);
    q_ = rt_.NewQueue();
  }
  TestRuntime rt_;
  std::shared_ptr<ManualFilter> filter_;
  uint32_t m_ = 0;
  std::unique_ptr<TestQueue> q_;
};

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_MANUAL_FILTER_H_
