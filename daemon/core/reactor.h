// Reactor: the one event loop behind every kqueue. It owns an epoll instance
// and one timer heap per clock, each heap driving a single timerfd armed at
// its earliest deadline — so thousands of EVFILT_TIMER knotes and kevent
// timeouts cost two file descriptors, not one each.
//
// Callbacks run on the loop thread, never with the reactor's lock held, so
// they may take kqueue locks. The lock order everywhere is: kqueue lock,
// then reactor lock. A callback may still run once after it was removed (if
// it was already dispatched); owners guard against that with weak pointers.
//
// CATCH-UP (causality). A kevent must see every event whose cause the kernel
// recorded before the call — BSD activates knotes synchronously from the
// write, close or kill. Here readiness reaches the core asynchronously, so
// before it scans, a kevent calls CatchUp(): on the calling thread it runs
// the sources' catch-up hooks (for sources whose fd readiness lags behind
// the kernel's record, such as a trace ring, whose wake-up is deferred to
// irq_work) and then dispatches whatever the reactor's epoll reports ready
// at that moment (one epoll_wait with a zero timeout when nothing is
// pending), plus the posted tasks. Dispatching is serialised by one
// dispatch lock, held by whoever dispatches (the loop thread or a catching-up
// thread) until the callbacks of its batch have returned. So when CatchUp
// returns, every readiness the kernel had recorded when it was called has
// been handed to its callback and the callback has finished (its
// Knote::Notify calls included): nothing can be "read but not yet
// reported" on another thread. Callbacks therefore run on one thread at a
// time, but not always the loop thread.
//
// Lock order: the dispatch lock comes before every kqueue lock and the
// reactor's lock; never call CatchUp() holding a kqueue lock. A nested call
// from inside a callback is a no-op.
#ifndef KQUEUED_DAEMON_CORE_REACTOR_H_
#define KQUEUED_DAEMON_CORE_REACTOR_H_

#include <sys/epoll.h>

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

  // Runs `task` soon, on the loop thread or in a CatchUp().
  void Post(Task task) EXCLUDES(mu_);

  // A source's synchronous catch-up: `hook` runs at the start of every
  // CatchUp() (dispatch-serialised with the callbacks). It must be cheap
  // when there is nothing to catch up (no syscall per call, ideally none).
  // Returns an id for RemoveCatchUpHook. The hook may run once more after
  // removal if a CatchUp() already took it: capture weak pointers.
  uint64_t AddCatchUpHook(Task hook) EXCLUDES(mu_);
  void RemoveCatchUpHook(uint64_t id) EXCLUDES(mu_);

  // Brings every event source up to date on the calling thread (see
  // CATCH-UP above). Call without any kqueue lock held. Cost when nothing
  // is pending: an uncontended mutex, the hooks, one epoll_wait(0).
  void CatchUp() EXCLUDES(dispatch_mu_, mu_);

  // Whether the calling thread is inside a CatchUp(): a callback then reads
  // its source to the end rather than a batch (the catch-up must leave
  // nothing the kernel recorded behind).
  static bool CatchingUp();

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

  void Loop() EXCLUDES(dispatch_mu_, mu_);
  // Dispatches n events from epoll_wait; under dispatch_mu_. Returns false
  // if the loop must stop. `catch_up`: on a catching-up thread (the wake
  // eventfd is left to the loop thread, the posted tasks are run anyway).
  bool DispatchLocked(const epoll_event* events, int n, bool catch_up)
      REQUIRES(dispatch_mu_) EXCLUDES(mu_);
  void RunPostedLocked() REQUIRES(dispatch_mu_) EXCLUDES(mu_);
  void Wake();
  void RearmLocked(Clock clock) REQUIRES(mu_);
  void FireTimers(Clock clock) REQUIRES(dispatch_mu_) EXCLUDES(mu_);
  TimerHeap& heap(Clock c) REQUIRES(mu_) { return heaps_[c == Clock::kMonotonic ? 0 : 1]; }
  // The heap's timerfd: set in the constructor and never changed after, so
  // it may be read without mu_ (the analysis cannot tell the fd from the
  // guarded heap around it).
  int timerfd(Clock c) const NO_THREAD_SAFETY_ANALYSIS {
    return heaps_[c == Clock::kMonotonic ? 0 : 1].timerfd.get();
  }

  ScopedFd epoll_;
  ScopedFd wake_;  // eventfd: Stop() and Post() wake the loop through it
  // Started under mu_ (Start); joined by Stop, which the owner calls once
  // the starting is over: not guarded.
  std::thread thread_;

  // The dispatch lock: held while callbacks, hooks and posted tasks run (see
  // CATCH-UP). First in the daemon's order: before every kqueue's lock,
  // every filter's and the reactor's mu_ (the callbacks take them).
  Mutex dispatch_mu_ ACQUIRED_BEFORE(mu_);

  // The reactor's own lock: the fd callbacks, timers, posted tasks and
  // hooks below. Last in every order (callers hold a kqueue's and a
  // filter's lock); nothing is locked under it and no callback runs under it.
  Mutex mu_;
  bool stopping_ GUARDED_BY(mu_) = false;
  int64_t next_token_ GUARDED_BY(mu_) = 1;
  std::unordered_map<int64_t, FdCallback> fd_callbacks_ GUARDED_BY(mu_);
  uint64_t next_timer_ GUARDED_BY(mu_) = 1;
  std::unordered_map<uint64_t, Timer> timers_ GUARDED_BY(mu_);
  TimerHeap heaps_[2] GUARDED_BY(mu_);
  std::vector<Task> posted_ GUARDED_BY(mu_);
  uint64_t next_hook_ GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Task> catch_up_hooks_ GUARDED_BY(mu_);
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_REACTOR_H_
