// Kqueue: one queue — its knotes, its active queue, and the kevent calls
// parked on it. Transport-independent: a kevent call reaches it as a
// KeventCall (the seed's kevent_ops), which fetches changes, puts events and
// is answered exactly once, possibly later and on another thread.
//
// Concurrency. One mutex guards the knotes, the queue and the parked calls,
// and filter hooks run under it. Unlike NetBSD 1.65, collection never drops
// the lock between taking a knote off the queue and deciding about it, so a
// concurrent collector can neither miss an event (PR kern/50094) nor see a
// knote freed under it. Answers (copy-out, completion) and readiness
// observers run after the lock is released.
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
#include <tuple>
#include <utility>
#include <vector>

#include "daemon/core/knote.h"
#include "daemon/core/process_context.h"
#include "daemon/core/runtime.h"
#include "daemon/util/locked_scope.h"
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
  // Whether the caller has closed the descriptor it made this call through
  // (then the call ends with EBADF, as NetBSD's close() does to a thread
  // waiting in kevent). Asked, under the kqueue's lock, only while the call
  // is parked and some descriptor of the kqueue was closed. False when the
  // call cannot tell (the default).
  virtual bool DescriptorClosed() const { return false; }
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
  uint64_t Kevent(std::unique_ptr<KeventCall> call);

  // Answers a parked call with EINTR (a signal reached the caller). No-op if
  // it was answered meanwhile.
  void Interrupt(uint64_t wait_id);

  // Some descriptor of this kqueue was closed: answers with EBADF every
  // parked call whose DescriptorClosed() says its own descriptor is gone.
  // Calls made through other descriptors (dup, fork) keep waiting.
  void DescriptorClosed();
  // How many closes have been counted. A call that parks while it is
  // non-zero has DescriptorClosed() run again after parking: a close whose
  // FLUSH overtook the parking (or even the call's request) is not lost.
  uint64_t descriptor_closes() const { return descriptor_closes_.load(); }
  // Counts a close without examining the waiters (lock-free, for threads
  // that must not wait for the kqueue's lock); DescriptorClosed() follows.
  void NoteDescriptorClosed() { descriptor_closes_++; }

  // The last close: deletes every knote and answers parked calls with EBADF.
  // Further kevent calls fail with EBADF.
  void Close();

  // Registers `kev` on behalf of a filter, as if `owner` had passed it to
  // kevent() (EVFILT_PROC's NOTE_TRACK attaching a knote to a forked
  // child). kev may carry EV_FLAG1, which user changes never do (the
  // EV_SYSFLAGS are masked off on input), so the filter can tell the two
  // apart. Takes the lock: never call it from a filter hook. Returns 0 or
  // an errno (EBADF once closed).
  int AttachChild(const kq_kevent& kev, const std::shared_ptr<ProcessContext>& owner);

  // Number of knotes on the active queue (poll, nested EVFILT_READ, stat).
  // Takes no kqueue lock: a parent kqueue's filter calls it (and the two
  // observer methods below) with the parent's lock held, and a kqueue lock
  // taken under another's would be a lock-order inversion once the nesting
  // is reversed (a -> b deleted, then b -> a).
  size_t Pending() const;

  // Observers run (without the lock) whenever the queue may have become
  // non-empty: poll notification, kqueues watching this one.
  uint64_t AddReadinessObserver(std::function<void()> fn);
  void RemoveReadinessObserver(uint64_t id);

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
  Stats Snapshot() const;

 private:
  struct Waiter {
    uint64_t id;
    std::unique_ptr<KeventCall> call;
    uint64_t timer_id;  // 0: no timeout
    uint64_t since;     // the evaluation clock when the call began
  };
  // mu_ held, plus the work to do once it is released (answers, copy-outs,
  // readiness observers): it runs after the unlock by construction.
  using Deferred = LockedScope<std::mutex>;
  // (ident, filter, owner): owner is 0, or for fd filters the pid of the
  // registering process — on a queue shared after fork() or SCM_RIGHTS
  // each process names its own descriptors (docs/abi.md). A pid is only a
  // number, but a knote whose process exited is found gone (its pidfd)
  // before a reused pid could take it over.
  using Key = std::tuple<uint64_t, uint32_t, pid_t>;
  static Key KeyOf(const Knote& kn);

  Kqueue(Runtime* runtime, uid_t uid, std::unique_ptr<UserLimits::Charge> charge);

  // The register verb: applies the call's changelist, writing an EV_ERROR
  // (or EV_RECEIPT) entry per failed (or receipted) change at the head of
  // the eventlist. Returns true if the call goes on to Scan with *room
  // eventlist slots left, false if it was answered.
  bool ApplyChanges(KeventCall& call, size_t* room);
  // The scan verb: brings the event sources up to date, collects up to
  // `room` events into the call and answers it, or parks it until an
  // activation or its timeout. Returns the wait id of a parked call, else 0.
  uint64_t Scan(std::unique_ptr<KeventCall> call, size_t room);

  // One change (kqueue_register). Returns 0 or an errno.
  int RegisterLocked(const kq_kevent& change,
                     const std::shared_ptr<ProcessContext>& caller,
                     Deferred* deferred);
  // Moves up to `max` events into `out` (kqueue_scan's inner loop) for a
  // call that began at evaluation clock `since`: a level-triggered knote is
  // re-evaluated unless an evaluation after `since` said "fire" already
  // (one evaluation per wake: that one is as fresh as the call needs).
  size_t CollectLocked(size_t max, uint64_t since, std::vector<kq_kevent>* out,
                       Deferred* deferred);
  // The filter's Event, stamped with the evaluation clock.
  bool EvaluateLocked(Knote& kn, long hint);
  void ActivateLocked(Knote& kn, Deferred* deferred);
  void EnqueueLocked(Knote& kn, Deferred* deferred);
  void DequeueLocked(Knote& kn);
  void DetachLocked(const std::shared_ptr<Knote>& kn);
  // Close's body but the observers: detaches every knote and answers
  // parked calls (EBADF) after the unlock.
  void CloseLocked(Deferred* deferred);
  // Serves parked calls while events are pending.
  void ServeWaitersLocked(Deferred* deferred);
  void NotifyObserversLater(Deferred* deferred);
  void ExpireWaiter(uint64_t wait_id);
  // Answers `call` with the collected events (after the lock is released).
  static void Deliver(std::unique_ptr<KeventCall> call, size_t base,
                      std::vector<kq_kevent> events);

  // Knote::Notify's body.
  friend class Knote;
  void NotifyKnote(const std::shared_ptr<Knote>& kn, long hint);

  Runtime* const runtime_;
  const uid_t uid_;
  const std::unique_ptr<UserLimits::Charge> charge_;

  mutable std::mutex mu_;  // guards everything below
  bool closed_ = false;
  std::map<Key, std::shared_ptr<Knote>> knotes_;
  std::list<std::shared_ptr<Knote>> queue_;  // active, enabled knotes
  std::deque<Waiter> waiters_;
  uint64_t next_wait_id_ = 1;
  std::atomic<uint64_t> descriptor_closes_{0};
  // queue_.size(), for Pending() without mu_.
  std::atomic<size_t> pending_{0};
  // Counts evaluations (written under mu_; read without it when a call
  // begins, before its catch-up).
  std::atomic<uint64_t> eval_clock_{0};

  // A leaf lock (nothing is locked under it), taken under mu_ too.
  mutable std::mutex observers_mu_;  // guards the two below
  std::map<uint64_t, std::function<void()>> observers_;
  uint64_t next_observer_ = 1;

  // Guarded by runtime_->nesting_mutex(): kqueues this one is watched by.
  std::multiset<Kqueue*> watchers_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_KQUEUE_H_
