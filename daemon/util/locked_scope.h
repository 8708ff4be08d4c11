// LockedScope: holds a mutex for its lifetime and runs the work queued on it
// (RunAfterUnlock) once the mutex is released — by construction, not by the
// order in which a caller happens to declare its locals.
//
// For code that decides under a lock what must be done without it: answers
// that copy out to a client, callbacks that take other locks.
#ifndef KQUEUED_DAEMON_UTIL_LOCKED_SCOPE_H_
#define KQUEUED_DAEMON_UTIL_LOCKED_SCOPE_H_

#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "daemon/util/thread_annotations.h"

namespace kqd {

template <typename Mutex>
class SCOPED_CAPABILITY LockedScope {
 public:
  using Work = std::function<void()>;

  // Locks `mu` (blocking).
  explicit LockedScope(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  // Unlocks, then runs the queued work in order, on this thread.
  ~LockedScope() RELEASE() {
    mu_.unlock();
    for (Work& w : work_) w();
  }
  LockedScope(const LockedScope&) = delete;
  LockedScope& operator=(const LockedScope&) = delete;

  // Queues `w` to run after the unlock.
  void RunAfterUnlock(Work w) { work_.push_back(std::move(w)); }

  // Hands the queued work to the caller instead (who runs it elsewhere, e.g.
  // on another thread); nothing is run at unlock then.
  std::vector<Work> TakeWork() { return std::exchange(work_, {}); }

 private:
  Mutex& mu_;
  std::vector<Work> work_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_UTIL_LOCKED_SCOPE_H_
