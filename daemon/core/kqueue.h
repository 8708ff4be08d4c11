// Kqueue: one queue — its knotes, its active queue, and the kevent calls
// parked on it. Transport-independent: a kevent call reaches it as a
// KeventCall (the seed's kevent_ops), which fetches changes, puts events and
// is answered exactly once, possibly later and on another thread.
//
// Locks (checked by clang's -Wthread-safety: bazel build --config=tsa):
//   Kqueue::mu_            the knotes (and every Knote field), the active
//                          queue, the parked calls, closed_. Filter hooks run
//                          under it. Unlike NetBSD 1.65, collection never
//                          drops it between taking a knote off the queue and
//                          deciding about it, so a concurrent collector can
//                          neither miss an event (PR kern/50094) nor see a
//                          knote freed under it.
//   Kqueue::observers_mu_  the readiness observers; a leaf.
//   Runtime::nesting_mutex the graph of kqueues watching kqueues (watchers_).
// Lock order: one kqueue's mu_, then its observers_mu_ or (from filter hooks)
// a filter's own lock, then the Reactor's. Never two kqueues' mu_ at once: a
// parent's hooks read a child only through Pending() and the observer
// methods, which take no mu_. Answers (copy-out, completion) and readiness
// observers run after mu_ is released (LockedScope); event sources report
// through Knote::Notify, which takes mu_ on their own thread.
#ifndef KQUEUED_DAEMON_CORE_KQUEUE_H_
#define KQUEUED_DAEMON_CORE_KQUEUE_H_

#include <time.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "daemon/core/knote.h"
#include "daemon/core/process_context.h"
#include "daemon/core/runtime.h"
#include "daemon/util/locked_scope.h"
#include "daemon/util/mutex.h"
#include "proto/kqueue_abi.h"

namespace kqd {

// The I/O of one kevent(2) call.
class KeventCall {
 public:
  virtual ~KeventCall() = default;
  // The calling process: fd idents are resolved in it.
  virtual const std::shared_ptr<ProcessContext>& caller() const = 0;
  virtual size_t nchanges() const = 0;
  virtual size_t nevents() const = 0;
  // Null: wait forever.
  virtual const timespec* timeout() const = 0;
  // Copies changes [first, first + n) into out. Returns 0 or an errno.
  virtual int FetchChanges(size_t first, kq_kevent* out, size_t n) = 0;
  // Copies n events to eventlist[first, first + n). Returns 0 or an errno.
  virtual int PutEvents(size_t first, const kq_kevent* events, size_t n) = 0;
  // The answer: result >= 0 when error == 0. Called exactly once.
  virtual void Complete(int result, int error) = 0;
};

class Kqueue : public std::enable_shared_from_this<Kqueue> {
 public:
  // A new kqueue for `uid`; null with *error = EMFILE at the user's limit.
  static std::shared_ptr<Kqueue> Create(Runtime* runtime, uid_t uid, int* error);
  ~Kqueue();
  Kqueue(const Kqueue&) = delete;
  Kqueue& operator=(const Kqueue&) = delete;

  // kevent(2), the seed's two verbs in turn: ApplyChanges (kqueue_register
  // for each change), then Scan (kqueue_scan), which parks the call if it
  // must wait. Returns a nonzero wait id if the call was parked (for
  // Interrupt), 0 if it was answered already.
  uint64_t Kevent(std::unique_ptr<KeventCall> call) EXCLUDES(mu_);

  // Answers a parked call with EINTR (a signal reached the caller). No-op if
  // it was answered meanwhile.
  void Interrupt(uint64_t wait_id) EXCLUDES(mu_);

  // The last close: deletes every knote and answers parked calls with EBADF.
  // Further kevent calls fail with EBADF.
  void Close() EXCLUDES(mu_);

  // Registers `kev` on behalf of a filter, as if `owner` had passed it to
  // kevent() (EVFILT_PROC's NOTE_TRACK attaching a knote to a forked
  // child). kev may carry EV_FLAG1, which user changes never do (the
  // EV_SYSFLAGS are masked off on input), so the filter can tell the two
  // apart. Takes the lock: never call it from a filter hook. Returns 0 or
  // an errno (EBADF once closed).
  int AttachChild(const kq_kevent& kev, const std::shared_ptr<ProcessContext>& owner)
      EXCLUDES(mu_);

  // Number of knotes on the active queue (poll, nested EVFILT_READ, stat).
  // Takes no kqueue lock: a parent kqueue's filter calls it (and the two
  // observer methods below) with the parent's lock held, and a kqueue lock
  // taken under another's would be a lock-order inversion once the nesting
  // is reversed (a -> b deleted, then b -> a).
  size_t Pending() const;

  // Observers run (without the lock) whenever the queue may have become
  // non-empty: poll notification, kqueues watching this one.
  uint64_t AddReadinessObserver(std::function<void()> fn) EXCLUDES(observers_mu_);
  void RemoveReadinessObserver(uint64_t id) EXCLUDES(observers_mu_);

  // Nesting: this kqueue is watched by `parent` (EVFILT_READ on it). ELOOP
  // if that would close a cycle. Call with runtime->nesting_mutex() held.
  int AddWatcherLocked(Kqueue* parent);
  void RemoveWatcherLocked(Kqueue* parent);

  Runtime* runtime() const { return runtime_; }
  uid_t uid() const { return uid_; }

  // What the queue holds, for kqstat (KQ_IOC_STAT): counted under the lock
  // at one instant. Never call it with another kqueue's lock held.
  struct Stats {
    size_t knotes = 0;
    size_t pending = 0;  // knotes on the active queue
    size_t waiters = 0;  // parked kevent calls
    std::map<uint32_t, size_t> knotes_by_filter;
  };
  Stats Snapshot() const EXCLUDES(mu_);

 private:
  struct Waiter {
    uint64_t id;
    std::unique_ptr<KeventCall> call;
    uint64_t timer_id;  // 0: no timeout
  };
  // mu_ held, plus the work to do once it is released (answers, copy-outs,
  // readiness observers): it runs after the unlock by construction.
  using Deferred = LockedScope<Mutex>;
  using Key = std::pair<uint64_t, uint32_t>;  // (ident, filter)
  // What evaluating a knote found.
  enum class Verdict { kFire, kQuiet, kGone };

  Kqueue(Runtime* runtime, uid_t uid, std::unique_ptr<UserLimits::Charge> charge);

  // The register verb: applies the call's changelist, writing an EV_ERROR
  // (or EV_RECEIPT) entry per failed (or receipted) change at the head of
  // the eventlist. Returns true if the call goes on to Scan with *room
  // eventlist slots left, false if it was answered.
  bool ApplyChanges(KeventCall& call, size_t* room) EXCLUDES(mu_);
  // The scan verb: collects up to `room` events into the call and answers
  // it, or parks it until an activation or its timeout. Returns the wait
  // id of a parked call, else 0.
  uint64_t Scan(std::unique_ptr<KeventCall> call, size_t room) EXCLUDES(mu_);

  // One change (kqueue_register). Returns 0 or an errno.
  int RegisterLocked(const kq_kevent& change,
                     const std::shared_ptr<ProcessContext>& caller,
                     Deferred* deferred) REQUIRES(mu_);
  // EV_ADD of a knote that does not exist yet: *out is attached and
  // inserted on success. Returns 0 or an errno.
  int AddKnoteLocked(const kq_kevent& change,
                     const std::shared_ptr<ProcessContext>& caller,
                     std::shared_ptr<Knote>* out) REQUIRES(mu_);
  // The one place a knote is evaluated (the filter's Event hook): a knote
  // whose fd turned out closed is detached (kGone).
  Verdict EvaluateLocked(const std::shared_ptr<Knote>& kn, long hint) REQUIRES(mu_);
  // Evaluates after a change and activates the knote if it fires. 0, or
  // EBADF if it is gone.
  int EvaluateChangedLocked(const std::shared_ptr<Knote>& kn, Deferred* deferred)
      REQUIRES(mu_);
  // Moves up to `max` events into `out` (kqueue_scan's inner loop).
  size_t CollectLocked(size_t max, std::vector<kq_kevent>* out,
                       Deferred* deferred) REQUIRES(mu_);
  // Parks `call` (with a timer for a finite timeout); returns its wait id.
  uint64_t ParkLocked(std::unique_ptr<KeventCall> call, const timespec* timeout)
      REQUIRES(mu_);
  void ActivateLocked(Knote& kn, Deferred* deferred) REQUIRES(mu_);
  void EnqueueLocked(Knote& kn, Deferred* deferred) REQUIRES(mu_);
  void DequeueLocked(Knote& kn) REQUIRES(mu_);
  void DetachLocked(const std::shared_ptr<Knote>& kn) REQUIRES(mu_);
  // Close's body but the observers: detaches every knote and answers
  // parked calls (EBADF) after the unlock.
  void CloseLocked(Deferred* deferred) REQUIRES(mu_);
  // Serves parked calls while events are pending.
  void ServeWaitersLocked(Deferred* deferred) REQUIRES(mu_);
  void NotifyObserversLater(Deferred* deferred) REQUIRES(mu_) EXCLUDES(observers_mu_);
  void ExpireWaiter(uint64_t wait_id) EXCLUDES(mu_);
  // Answers `call` with the collected events (after the lock is released).
  static void Deliver(std::unique_ptr<KeventCall> call, size_t base,
                      std::vector<kq_kevent> events);

  // Knote::Notify's body.
  friend class Knote;
  void NotifyKnote(const std::shared_ptr<Knote>& kn, long hint) EXCLUDES(mu_);

  Runtime* const runtime_;
  const uid_t uid_;
  const std::unique_ptr<UserLimits::Charge> charge_;

  mutable Mutex mu_;
  bool closed_ GUARDED_BY(mu_) = false;
  std::map<Key, std::shared_ptr<Knote>> knotes_ GUARDED_BY(mu_);
  std::list<std::shared_ptr<Knote>> queue_ GUARDED_BY(mu_);  // active, enabled knotes
  std::deque<Waiter> waiters_ GUARDED_BY(mu_);
  uint64_t next_wait_id_ GUARDED_BY(mu_) = 1;
  // queue_.size(), for Pending() without mu_.
  std::atomic<size_t> pending_{0};

  // A leaf lock (nothing is locked under it), taken under mu_ too.
  mutable Mutex observers_mu_ ACQUIRED_AFTER(mu_);
  std::map<uint64_t, std::function<void()>> observers_ GUARDED_BY(observers_mu_);
  uint64_t next_observer_ GUARDED_BY(observers_mu_) = 1;

  // Guarded by runtime_->nesting_mutex() (the Add/RemoveWatcherLocked
  // callers hold it; the analysis cannot name another kqueue's runtime's
  // mutex, so this one is checked by review): kqueues watching this one.
  std::multiset<Kqueue*> watchers_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_KQUEUE_H_
