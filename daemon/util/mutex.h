// Mutex and MutexLock: std::mutex and std::lock_guard as capabilities the
// compiler checks (thread_annotations.h). Every lock of the daemon is one;
// its owner says, where it declares it, what it guards and the lock order.
#ifndef KQUEUED_DAEMON_UTIL_MUTEX_H_
#define KQUEUED_DAEMON_UTIL_MUTEX_H_

#include <mutex>

#include "daemon/util/thread_annotations.h"

namespace kqd {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }

  // For std::condition_variable: wait with a std::unique_lock on this.
  std::mutex& native() { return mu_; }

  // Tells the analysis that the caller holds this mutex (where it cannot
  // see it: a lock taken through native()).
  void AssertHeld() const ASSERT_CAPABILITY(this) {}

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope (std::lock_guard, checked).
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_UTIL_MUTEX_H_
