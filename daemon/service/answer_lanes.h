// Threads that answer parked kevent calls, by uid.
//
// A parked call is answered by whichever thread makes its event happen —
// the core's reactor thread, usually, or another caller's serving thread.
// Answering means writing the events into the caller's eventlist, and that
// page may lie in a file whose filesystem never answers (a FUSE file of the
// caller's own): the writing thread then waits as long as the page does. So
// no such thread writes: it hands the copy and the reply to these lanes.
//
// Like the transport's per-uid lanes (fuse_request_dispatch.h), each uid
// has at most kBusyThreadsPerUid answers in progress; its further answers
// wait in its queue, in order, holding no thread. Threads are started as
// lanes need them and kept while work keeps coming (an idle thread waits
// kIdleExit before it ends): a user whose pages never arrive holds its own
// two threads, and every other uid is answered by threads of its own.
#ifndef KQUEUED_DAEMON_SERVICE_ANSWER_LANES_H_
#define KQUEUED_DAEMON_SERVICE_ANSWER_LANES_H_

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <thread>
#include <unordered_map>

#include "daemon/util/mutex.h"

namespace kqd {

class AnswerLanes {
 public:
  using Work = std::function<void()>;
  // Answers of one uid in progress at once, at most (the transport's
  // kBusyThreadsPerUid, which the service does not link against).
  static constexpr int kBusyPerUid = 2;
  // How long a thread with nothing to do waits for more before it ends.
  static constexpr std::chrono::seconds kIdleExit{5};

  AnswerLanes() = default;
  // Runs what is queued, then joins every thread. A thread still waiting
  // for a caller's page holds this up until the page arrives (as Stop()
  // of the transport waits for a serving thread on such a page).
  ~AnswerLanes();
  AnswerLanes(const AnswerLanes&) = delete;
  AnswerLanes& operator=(const AnswerLanes&) = delete;

  // Runs `work` soon on a lane thread of `uid`, after the uid's earlier
  // work. Never waits for other work. Thread-safe.
  void Post(uid_t uid, Work work) EXCLUDES(mu_);

  // For tests and statistics.
  size_t threads() const EXCLUDES(mu_);

 private:
  struct Lane {
    int busy = 0;  // threads working this lane's queue (<= kBusyPerUid)
    std::deque<Work> queue;
  };
  struct Worker {
    std::thread thread;
    bool done = false;  // its body returned; join() will not wait
  };

  // A worker's body: takes a lane from runnable_, runs its queue dry,
  // repeats; ends after kIdleExit with nothing to do, or when stopping.
  void Run(std::list<Worker>::iterator self) EXCLUDES(mu_);
  // Runs `uid`'s queue until it is empty, then gives up the lane's slot.
  void Drain(uid_t uid) EXCLUDES(mu_);
  // Joins workers that have ended (never waits: they have returned).
  void JoinEnded() EXCLUDES(mu_);

  // A leaf: no other lock is taken under it, and the work runs without it.
  mutable Mutex mu_;
  std::condition_variable cv_;  // runnable_ grew, or stopping_
  std::unordered_map<uid_t, Lane> lanes_ GUARDED_BY(mu_);
  // One entry per slot granted and not yet taken by a thread.
  std::deque<uid_t> runnable_ GUARDED_BY(mu_);
  std::list<Worker> workers_ GUARDED_BY(mu_);
  size_t idle_ GUARDED_BY(mu_) = 0;  // workers waiting for a slot
  size_t ended_ GUARDED_BY(mu_) = 0;  // workers done and not joined
  bool stopping_ GUARDED_BY(mu_) = false;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_ANSWER_LANES_H_
