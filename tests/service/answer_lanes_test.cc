// AnswerLanes: a uid's answers run at most two at once, each exactly once; a uid
// whose answers never finish holds only its own two threads, and every
// other uid's answers still run at once.
#include "daemon/service/answer_lanes.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "gtest/gtest.h"

namespace kqd {
namespace {

using std::chrono::seconds;

// A gate that work waits at until the test opens it.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int waiting = 0;
  void Wait() {
    std::unique_lock<std::mutex> l(mu);
    waiting++;
    cv.notify_all();
    cv.wait(l, [&] { return open; });
  }
  bool WaitForWaiting(int n) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, seconds(10), [&] { return waiting >= n; });
  }
  int Waiting() {
    std::lock_guard<std::mutex> l(mu);
    return waiting;
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu);
    open = true;
    cv.notify_all();
  }
};

TEST(AnswerLanes, AStuckUidHoldsTwoThreadsAndOthersRun) {
  Gate gate;
  std::atomic<int> stuck_done{0};
  std::mutex mu;
  std::condition_variable cv;
  int other_done = 0;
  {
    AnswerLanes lanes;
    // uid 1: five answers that wait at the gate (a page that never comes).
    for (int i = 0; i < 5; i++)
      lanes.Post(1, [&] {
        gate.Wait();
        stuck_done++;
      });
    ASSERT_TRUE(gate.WaitForWaiting(2));
    // uid 2 is answered while uid 1's two threads wait.
    for (int i = 0; i < 3; i++)
      lanes.Post(2, [&] {
        std::lock_guard<std::mutex> l(mu);
        other_done++;
        cv.notify_all();
      });
    {
      std::unique_lock<std::mutex> l(mu);
      EXPECT_TRUE(cv.wait_for(l, seconds(10), [&] { return other_done == 3; }));
    }
    // Never more than two of uid 1's at once; the rest queued, no thread.
    EXPECT_EQ(gate.Waiting(), 2);
    EXPECT_LE(lanes.threads(), 4u);  // two per uid at most
    gate.Open();
    // The destructor runs what is queued and joins.
  }
  EXPECT_EQ(stuck_done.load(), 5);
}

TEST(AnswerLanes, EveryPostedAnswerRunsOnce) {
  std::mutex mu;
  std::vector<int> seen(200, 0);
  {
    AnswerLanes lanes;
    for (int i = 0; i < 200; i++)
      lanes.Post(static_cast<uid_t>(i % 3), [&, i] {
        std::lock_guard<std::mutex> l(mu);
        seen[static_cast<size_t>(i)]++;
      });
  }
  for (size_t i = 0; i < seen.size(); i++) EXPECT_EQ(seen[i], 1) << "answer " << i;
}

}  // namespace
}  // namespace kqd
