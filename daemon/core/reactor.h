// Reactor: the one event loop behind every kqueue. It owns an epoll instance
// and one timer heap per clock, each heap driving a single timerfd armed at
// its earliest deadline — so thousands of EVFILT_TIMER knotes and kevent
// timeouts cost two file descriptors, not one each.
//
// Callbacks run on the loop thread, never with the reactor's lock held, so
// they may take kqueue locks. The lock order everywhere is: kqueue lock,
// then reactor lock. A callback may still run once after it was removed (if
// it was already dispatched); owners guard against that with weak pointers.
#ifndef KQUEUED_DAEMON_CORE_REACTOR_H_
#define KQUEUED_DAEMON_CORE_REACTOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

class Reactor {
 public:
  enum class Clock { kMonotonic, kRealtime };
  using FdCallback = std::function<void(uint32_t events)>;
  using TimerCallback = std::function<void()>;
  using Task = std::function<void()>;

  Reactor();
  ~Reactor();  // stops the loop thread
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // Whether construction succeeded (epoll/timerfd/eventfd could be made).
  bool ok() const { return epoll_.valid(); }

  // Runs the loop on a new thread until Stop() or destruction.
  void Start() EXCLUDES(mu_);
  void Stop() EXCLUDES(mu_);

  // Adds `fd` to the epoll set; `cb` runs on the loop thread with the ready
  // events. Returns a token > 0, or -errno. The fd is only used for the
  // epoll_ctl call: the caller decides what stays open.
  int64_t AddFd(int fd, uint32_t events, FdCallback cb) EXCLUDES(mu_);
  // Forgets the token's callback; if fd >= 0 also EPOLL_CTL_DEL it (an error
  // there, e.g. the file already gone, is ignored).
  void RemoveFd(int fd, int64_t token) EXCLUDES(mu_);

  // Runs `cb` once on the loop thread at `deadline_ns` on `clock`
  // (nanoseconds since the clock's epoch). Returns an id for CancelTimer.
  uint64_t AddTimer(Clock clock, int64_t deadline_ns, TimerCallback cb) EXCLUDES(mu_);
  void CancelTimer(uint64_t id) EXCLUDES(mu_);

  // Runs `task` on the loop thread soon.
  void Post(Task task) EXCLUDES(mu_);

  static int64_t Now(Clock clock);

 private:
  struct TimerHeap {
    ScopedFd timerfd;
    // (deadline, id) ordered: begin() is the next to fire.
    std::set<std::pair<int64_t, uint64_t>> order;
    int64_t armed_ns = -1;  // what timerfd is armed for; -1 disarmed
  };
  struct Timer {
    Clock clock;
    int64_t deadline_ns;
    TimerCallback cb;
  };

  void Loop() EXCLUDES(mu_);
  void Wake();
  void RearmLocked(Clock clock) REQUIRES(mu_);
  void FireTimers(Clock clock) EXCLUDES(mu_);
  TimerHeap& heap(Clock c) REQUIRES(mu_) { return heaps_[c == Clock::kMonotonic ? 0 : 1]; }
  // The heap's timerfd: set in the constructor and never changed after, so
  // it may be read without mu_.
  int timerfd(Clock c) const NO_THREAD_SAFETY_ANALYSIS {
    return heaps_[c == Clock::kMonotonic ? 0 : 1].timerfd.get();
  }

  ScopedFd epoll_;
  ScopedFd wake_;  // eventfd: Stop() and Post() wake the loop through it
  std::thread thread_;

  // The loop's own lock, the last in every order (callers may hold a
  // kqueue's and a filter's); callbacks run without it.
  Mutex mu_;
  bool stopping_ GUARDED_BY(mu_) = false;
  int64_t next_token_ GUARDED_BY(mu_) = 1;
  std::unordered_map<int64_t, FdCallback> fd_callbacks_ GUARDED_BY(mu_);
  uint64_t next_timer_ GUARDED_BY(mu_) = 1;
  std::unordered_map<uint64_t, Timer> timers_ GUARDED_BY(mu_);
  TimerHeap heaps_[2] GUARDED_BY(mu_);
  std::vector<Task> posted_ GUARDED_BY(mu_);
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_REACTOR_H_
