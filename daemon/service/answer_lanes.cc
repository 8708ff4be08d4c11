#include "daemon/service/answer_lanes.h"

#include <pthread.h>
#include <signal.h>

#include <utility>

namespace kqd {

AnswerLanes::~AnswerLanes() {
  std::list<Worker> workers;
  {
    MutexLock l(mu_);
    stopping_ = true;
    // The workers' own iterators stay valid in the moved-to list.
    workers.swap(workers_);
  }
  cv_.notify_all();
  for (Worker& w : workers) w.thread.join();
}

void AnswerLanes::Post(uid_t uid, Work work) {
  bool join = false;
  bool here = false;
  {
    MutexLock l(mu_);
    here = stopping_;
    if (!here) {
      Lane& lane = lanes_[uid];
      lane.queue.push_back(std::move(work));
      if (lane.busy < kBusyPerUid) {
        lane.busy++;
        runnable_.push_back(uid);
        if (idle_ >= runnable_.size()) {
          cv_.notify_one();
        } else {
          // A thread of its own for this slot. Started with every signal
          // blocked, as the daemon's other threads run: process-directed
          // signals are for the main thread's sigtimedwait.
          sigset_t all, old;
          sigfillset(&all);
          pthread_sigmask(SIG_SETMASK, &all, &old);
          auto self = workers_.emplace(workers_.end());
          self->thread = std::thread([this, self] { Run(self); });
          pthread_sigmask(SIG_SETMASK, &old, nullptr);
        }
      }
      join = ended_ > 0;
    }
  }
  // Only while the lanes are being destroyed (nothing should post then):
  // answered here rather than lost.
  if (here) work();
  if (join) JoinEnded();
}

size_t AnswerLanes::threads() const {
  MutexLock l(mu_);
  return workers_.size() - ended_;
}

void AnswerLanes::Run(std::list<Worker>::iterator self) {
  UniqueMutexLock l(mu_);
  for (;;) {
    if (runnable_.empty() && !stopping_) {
      idle_++;
      const bool timed_out =
          cv_.wait_for(l.native(), kIdleExit) == std::cv_status::timeout;
      idle_--;
      if (runnable_.empty() && (timed_out || stopping_)) break;
      if (runnable_.empty()) continue;  // spurious
    }
    if (runnable_.empty()) break;  // stopping, and nothing left to take
    const uid_t uid = runnable_.front();
    runnable_.pop_front();
    l.unlock();
    Drain(uid);
    l.lock();
  }
  self->done = true;
  ended_++;
}

void AnswerLanes::Drain(uid_t uid) {
  for (;;) {
    Work work;
    {
      MutexLock l(mu_);
      auto it = lanes_.find(uid);
      if (it == lanes_.end()) return;
      Lane& lane = it->second;
      if (lane.queue.empty()) {
        if (--lane.busy <= 0) lanes_.erase(it);
        return;
      }
      work = std::move(lane.queue.front());
      lane.queue.pop_front();
    }
    work();
  }
}

void AnswerLanes::JoinEnded() {
  std::list<Worker> ended;
  {
    MutexLock l(mu_);
    for (auto it = workers_.begin(); it != workers_.end();) {
      auto next = std::next(it);
      if (it->done) ended.splice(ended.end(), workers_, it);
      it = next;
    }
    ended_ = 0;
  }
  for (Worker& w : ended) w.thread.join();
}

}  // namespace kqd
