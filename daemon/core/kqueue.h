// Kqueue: one queue — its knotes, its active queue, and the kevent calls
// parked on it. Transport-independent: a kevent call reaches it as a
// KeventCall (the seed's kevent_ops), which fetches changes, puts events and
// is answered exactly once, possibly later and on another thread.
//
// LOCKING — every lock in the daemon, what it guards, and the order.
// (Checked by clang's -Wthread-safety: bazel build --config=tsa. Each lock's
// declaration repeats what it guards and its place below.)
//
//   Transport (daemon/transport), taken by serving threads, never held
//   while the service runs:
//     RequestDispatcher::lanes_mu_   uid lanes of queued ioctls
//     ReplyChannel::gate_mu_         the session (shared: replies, poll
//                                    notifications; exclusive: Close)
//     PendingIoctl::mu               one ioctl's answer state
//     ReplyChannel::pending_mu_      registry of unanswered ioctls
//     RequestDispatcher::handles_mu_ open handles
//     SessionLoop::mu_               serving threads' bookkeeping, tasks
//     Fuse/CuseTransport::stop_mu_   the session while it stops
//   Service (daemon/service), taken with no kqueue lock held unless noted:
//     KqueueDevice::mu_              handle -> kqueue map (a leaf)
//     KqueueDevice::PollSlot::mu     a kqueue's last poll notifier (a leaf)
//     ProcessCache::State::mu        thread/process caches
//     RemoteProcess::mu_             a client's kqueue descriptors (also
//                                    under a kqueue's mu_, from a filter)
//     DeviceIdentity::mu_            our device's identity (a leaf)
//   Core (daemon/core):
//     Reactor::dispatch_mu_          held while reactor callbacks, catch-up
//                                    hooks and posted tasks run
//     Kqueue::mu_                    below
//     Kqueue::observers_mu_          readiness observers (a leaf)
//     Kqueue::children_mu_           the nested EVFILT_READ knotes a kqueue
//                                    holds on others (a leaf)
//     Runtime::nesting_mutex         the graph of kqueues watching kqueues
//                                    (every Kqueue's watchers_)
//     FilterRegistry::mu_            filter numbers and names (a leaf)
//     UserLimits::mu_                per-user counts (a leaf)
//     Reactor::mu_                   fd callbacks, timers, posted tasks
//   Filters (daemon/filters, plugins), taken under a kqueue's mu_ by their
//   hooks, knotes notified after release: FdWatcher::mu_, ProcTracker::mu_,
//   ProcEvents::mu_, SignalWatchers::mu_, MountTables::mu_ and each
//   MountNamespace's, InotifyMux::mu_, the netdev plug-in's mu_.
//   Logger::mu_ (daemon/os): a leaf under everything.
//
// Kqueue::mu_ guards the knotes (and every Knote field), the active queue,
// the parked calls, closed_ and the local owner (ABI 4); filter hooks run
// under it. Kqueue::signal_mu_, a leaf taken under mu_ or alone (a FLUSH on
// the transport's thread), guards the owner's signal, whose Set runs under
// it and takes no lock. Unlike NetBSD
// 1.65, collection never drops it between taking a knote off the queue and
// deciding about it, so a concurrent collector can neither miss an event
// (PR kern/50094) nor see a knote freed under it.
//
// Order (a lock may be taken only while holding locks to its left):
//   lanes_mu_ -> gate_mu_ -> PendingIoctl::mu -> SessionLoop::mu_
//   Reactor::dispatch_mu_ -> Kqueue::mu_ -> {signal_mu_, observers_mu_, children_mu_,
//     nesting_mutex,
//     FilterRegistry::mu_, RemoteProcess::mu_ -> DeviceIdentity::mu_,
//     a filter's lock -> (MountNamespace's)} -> UserLimits::mu_ -> Reactor::mu_
//   ProcessCache::State::mu -> Reactor::mu_;   Logger::mu_ last of all.
// Never two kqueues' mu_ at once: a parent's hooks read a child only
// through Pending() and the observer methods, which take no mu_, and a
// kqueue destroyed under another's lock tells its observers from the
// reactor (~Kqueue). To make a child's Pending() exact, Refresh() takes
// each kqueue's mu_ in turn, children first, always with no kqueue's mu_
// held: poll on the descriptor, a Scan before it locks, and a nested
// knote's observer (which runs with no lock held) call it; a parent's hooks
// never do. Never CatchUp() (dispatch_mu_) under a kqueue's mu_.
// Answers (copy-out, completion) and readiness observers run after mu_ is
// released, by construction (LockedScope); event sources report through
// Knote::Notify, which takes mu_ on their own thread with no filter lock held.
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
#include "daemon/core/local_signal.h"
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
  // Runs `answer` (PutEvents of the events taken for this parked call, then
  // Complete) on a thread that may wait for the caller's memory. Called on
  // the thread that made the call's event happen — the reactor's, usually,
  // or another caller's — which must never wait for this caller's pages (a
  // slow filesystem would hold every kqueue's events). `answer` owns the
  // call: this object may be gone once it has run. The default runs it
  // here, for calls whose PutEvents cannot block.
  virtual void RunParkedAnswer(std::function<void()> answer) { answer(); }
  // Whether the caller has closed the descriptor it made this call through
  // (then the call ends with EBADF, as NetBSD's close() does to a thread
  // waiting in kevent). Asked, under the kqueue's lock, only while the call
  // is parked and some descriptor of the kqueue was closed. False when the
  // call cannot tell (the default).
  virtual bool DescriptorClosed() const { return false; }
  // The call's KQ_KEVENT_LOCAL_CHANGES / KQ_KEVENT_SKIP_LOCAL bits (ABI 4);
  // the core honours them only for the queue's local owner.
  virtual uint32_t local_flags() const { return 0; }
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

  // Some descriptor of this kqueue was closed: answers with EBADF every
  // parked call whose DescriptorClosed() says its own descriptor is gone.
  // Calls made through other descriptors (dup, fork) keep waiting.
  void DescriptorClosed() EXCLUDES(mu_);
  // How many closes have been counted. A call that parks while it is
  // non-zero has DescriptorClosed() run again after parking: a close whose
  // FLUSH overtook the parking (or even the call's request) is not lost.
  uint64_t descriptor_closes() const { return descriptor_closes_.load(); }
  // Counts a close without examining the waiters (lock-free, for threads
  // that must not wait for the kqueue's lock); DescriptorClosed() follows.
  void NoteDescriptorClosed() { descriptor_closes_++; }

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

  // KQ_IOC_LOCAL_ATTACH's core (ABI 4): `owner`'s process becomes the
  // queue's local owner, told through `signal` — set readable at once if
  // the queue holds any knote (none is local yet) — whether it holds knotes
  // that are not local. The kqueue keeps both until it closes. Returns 0,
  // EBUSY if the queue has a local owner already, EBADF once closed (then
  // `signal` is dropped at once).
  int AttachLocal(std::shared_ptr<ProcessContext> owner, std::unique_ptr<LocalSignal> signal)
      EXCLUDES(mu_);
  // Whether the queue has a local owner (a cheap early EBUSY for the
  // service, which must not set up a signal in vain; AttachLocal decides).
  bool HasLocalOwner() const EXCLUDES(mu_, signal_mu_);
  // A descriptor of this queue was closed by `closer` (the kernel's FLUSH,
  // before close() returns). If `closer` is the local owner's process, the
  // local signal is made readable at once and stays so until a kevent call
  // of the owner reaches the daemon (which proves the owner still has a
  // descriptor of the queue): the owner's library, collecting from its
  // epoll instance, then turns to the daemon and finds the descriptor it
  // uses closed. Takes only signal_mu_ (a leaf), never mu_: safe on the
  // transport's thread.
  void OwnerClosedDescriptor(const ProcessContext& closer) EXCLUDES(signal_mu_);
  // Whether the queue has a local signal (a local owner, not closed), by
  // signal_mu_ alone: lets a FLUSH skip finding out who closed.
  bool HasLocalSignal() const EXCLUDES(signal_mu_);

  // Number of knotes on the active queue (poll, nested EVFILT_READ, stat).
  // Takes no kqueue lock: a parent kqueue's filter calls it (and the two
  // observer methods below) with the parent's lock held, and a kqueue lock
  // taken under another's would be a lock-order inversion once the nesting
  // is reversed (a -> b deleted, then b -> a). Exact only just after
  // Refresh(): a local knote stays queued, as the daemon last saw it, while
  // its owner drains the file through its own epoll instance.
  size_t Pending() const;

  // Makes Pending() exact before someone answers from it (poll on the
  // kqueue descriptor, a nested EVFILT_READ): first refreshes the kqueues
  // this one watches (the EVFILT_READ knotes it holds on them, below), then,
  // under this kqueue's lock, re-evaluates the queued knotes whose condition
  // may have gone without the daemon hearing of it — local knotes (ABI 4)
  // and those nested EVFILT_READ knotes — as a collecting scan does, and
  // takes off the queue those that no longer fire. Costs two atomic loads
  // on a queue with neither. Call it with no kqueue lock held: it takes
  // each kqueue's lock in turn, never two at once.
  void Refresh() EXCLUDES(mu_);

  // The nested EVFILT_READ knotes this kqueue holds (registered by the
  // filter's Attach, under this kqueue's lock; removed by its Detach):
  // `knote` in this kqueue watches `child`. Refresh() and Scan refresh the
  // children first. Take only children_mu_ (a leaf).
  uint64_t AddWatchedChild(std::weak_ptr<Kqueue> child, std::weak_ptr<Knote> knote)
      EXCLUDES(children_mu_);
  void RemoveWatchedChild(uint64_t id) EXCLUDES(children_mu_);

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
    size_t local = 0;    // knotes the local owner collects itself
    std::map<uint32_t, size_t> knotes_by_filter;
  };
  Stats Snapshot() const EXCLUDES(mu_);

 private:
  struct Waiter {
    uint64_t id;
    std::unique_ptr<KeventCall> call;
    uint64_t timer_id;  // 0: no timeout
    uint64_t since;     // the evaluation clock when the call began
    bool skip_local;    // the local owner's KQ_KEVENT_SKIP_LOCAL call
  };
  // mu_ held, plus the work to do once it is released (answers, copy-outs,
  // readiness observers): it runs after the unlock by construction.
  using Deferred = LockedScope<Mutex>;
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
  bool ApplyChanges(KeventCall& call, size_t* room) EXCLUDES(mu_);
  // The scan verb: brings the event sources up to date, collects up to
  // `room` events into the call and answers it, or parks it until an
  // activation or its timeout. Returns the wait id of a parked call, else 0.
  uint64_t Scan(std::unique_ptr<KeventCall> call, size_t room) EXCLUDES(mu_);

  // One change (kqueue_register). Returns 0 or an errno.
  int RegisterLocked(const kq_kevent& change,
                     const std::shared_ptr<ProcessContext>& caller,
                     Deferred* deferred) REQUIRES(mu_);
  // The errno of a change without EV_ADD that found no knote: EINVAL,
  // EBADF or ENOENT, in the seed's order.
  int NoKnoteErrorLocked(const kq_kevent& change, const ProcessContext& caller)
      REQUIRES(mu_);
  // Moves up to `max` events into `out` (kqueue_scan's inner loop) for a
  // call that began at evaluation clock `since`: a level-triggered knote is
  // re-evaluated unless an evaluation after `since` said "fire" already
  // (one evaluation per wake: that one is as fresh as the call needs).
  // With `skip_local`, local knotes are passed over where they are: neither
  // evaluated, nor taken, nor moved.
  size_t CollectLocked(size_t max, uint64_t since, bool skip_local,
                       std::vector<kq_kevent>* out, Deferred* deferred) REQUIRES(mu_);
  // The filter's Event, stamped with the evaluation clock.
  bool EvaluateLocked(Knote& kn, long hint) REQUIRES(mu_);
  // Refresh() at nesting depth `depth` (a bound, in case the graph changes
  // under a walk that copies it one kqueue at a time).
  void RefreshAt(int depth) EXCLUDES(mu_);
  // Refreshes the kqueues this one watches (before this one's lock).
  // Fills *knotes with this kqueue's knotes on them.
  void RefreshChildren(int depth, std::vector<std::shared_ptr<Kqueue>>* children,
                       std::vector<std::weak_ptr<Knote>>* knotes) EXCLUDES(mu_);
  // The level re-check a collection makes, for a knote that stays queued:
  // re-evaluates it (unless EV_ONESHOT) and takes it off the queue if it no
  // longer fires (or detaches it if its file is gone).
  void RecheckQueuedLocked(const std::shared_ptr<Knote>& kn) REQUIRES(mu_);
  void ActivateLocked(Knote& kn, Deferred* deferred) REQUIRES(mu_);
  void EnqueueLocked(Knote& kn, Deferred* deferred) REQUIRES(mu_);
  void DequeueLocked(Knote& kn) REQUIRES(mu_);
  void DetachLocked(const std::shared_ptr<Knote>& kn) REQUIRES(mu_);
  // Close's body but the observers: detaches every knote and answers
  // parked calls (EBADF) after the unlock.
  void CloseLocked(Deferred* deferred) REQUIRES(mu_);
  // Whether `caller` is the queue's local owner (false while it has none).
  bool IsLocalOwnerLocked(const ProcessContext& caller) const REQUIRES(mu_);
  // After a change applied by `caller`: the knote it names (if any) becomes
  // local iff `mark` (the owner's KQ_CHANGE_LOCAL in a LOCAL_CHANGES call)
  // and it qualifies (enabled READ/WRITE, level-triggered, no NOTE_LOWAT);
  // else it stops being local. Then the signal follows.
  void AfterChangeLocked(const kq_kevent& change, const ProcessContext& caller, bool mark)
      REQUIRES(mu_);
  void SetLocalLocked(Knote& kn, bool local) REQUIRES(mu_);
  // Makes the local signal readable iff some knote is not local or the
  // owner closed a descriptor since its last call (OwnerClosedDescriptor).
  void UpdateLocalSignalLocked() REQUIRES(mu_) EXCLUDES(signal_mu_);
  // A kevent call of the local owner reached us: a close it made before
  // no longer keeps the signal readable.
  void OwnerCalledLocked() REQUIRES(mu_) EXCLUDES(signal_mu_);
  // Serves parked calls while events are pending.
  void ServeWaitersLocked(Deferred* deferred) REQUIRES(mu_);
  void NotifyObserversLater(Deferred* deferred) REQUIRES(mu_) EXCLUDES(observers_mu_);
  void ExpireWaiter(uint64_t wait_id) EXCLUDES(mu_);
  // Answers `call` with the collected events (after the lock is released).
  static void Deliver(KeventCall& call, size_t base, std::vector<kq_kevent> events);

  // Knote::Notify's body.
  friend class Knote;
  void NotifyKnote(const std::shared_ptr<Knote>& kn, long hint) EXCLUDES(mu_);

  Runtime* const runtime_;
  const uid_t uid_;
  const std::unique_ptr<UserLimits::Charge> charge_;

  // The kqueue's lock (see the overview at the top of this file): first in
  // every order the daemon has; never held together with another kqueue's.
  mutable Mutex mu_;
  bool closed_ GUARDED_BY(mu_) = false;
  std::map<Key, std::shared_ptr<Knote>> knotes_ GUARDED_BY(mu_);
  std::list<std::shared_ptr<Knote>> queue_ GUARDED_BY(mu_);  // active, enabled knotes
  std::deque<Waiter> waiters_ GUARDED_BY(mu_);
  // Local collection (ABI 4): the owner (null: none) and how many knotes
  // are local.
  std::shared_ptr<ProcessContext> local_owner_ GUARDED_BY(mu_);
  size_t local_knotes_ GUARDED_BY(mu_) = 0;
  // local_knotes_ > 0, for Refresh() without mu_.
  std::atomic<bool> has_local_{false};
  // Guards the local signal and what it shows: taken under mu_, or alone
  // by OwnerClosedDescriptor (a FLUSH on the transport's thread, which must
  // never wait for mu_); nothing is taken under it but the signal's Set
  // and the owner's SameProcess (neither takes a lock).
  mutable Mutex signal_mu_ ACQUIRED_AFTER(mu_);
  // The signal (null: no owner, or closed), a copy of local_owner_ for
  // OwnerClosedDescriptor, whether the signal was last set readable, and
  // whether an owner's close keeps it readable.
  std::unique_ptr<LocalSignal> local_signal_ GUARDED_BY(signal_mu_);
  std::shared_ptr<ProcessContext> signal_owner_ GUARDED_BY(signal_mu_);
  bool local_signal_set_ GUARDED_BY(signal_mu_) = false;
  bool owner_closed_ GUARDED_BY(signal_mu_) = false;
  uint64_t next_wait_id_ GUARDED_BY(mu_) = 1;
  // Atomic: counted without mu_ (NoteDescriptorClosed).
  std::atomic<uint64_t> descriptor_closes_{0};
  // queue_.size(), for Pending() without mu_.
  std::atomic<size_t> pending_{0};
  // Counts evaluations (written under mu_; read without it when a call
  // begins, before its catch-up).
  std::atomic<uint64_t> eval_clock_{0};

  // The readiness observers. A leaf (nothing is locked under it), taken
  // under mu_ too, and alone by a parent kqueue's hooks under the parent's mu_.
  mutable Mutex observers_mu_ ACQUIRED_AFTER(mu_);
  std::map<uint64_t, std::function<void()>> observers_ GUARDED_BY(observers_mu_);
  uint64_t next_observer_ GUARDED_BY(observers_mu_) = 1;

  // The nested EVFILT_READ knotes this kqueue holds, by id (a leaf, taken
  // under mu_ by the filter's hooks and alone by Refresh and Scan).
  struct WatchedChild {
    std::weak_ptr<Kqueue> child;
    std::weak_ptr<Knote> knote;
  };
  mutable Mutex children_mu_ ACQUIRED_AFTER(mu_);
  std::map<uint64_t, WatchedChild> children_ GUARDED_BY(children_mu_);
  uint64_t next_child_ GUARDED_BY(children_mu_) = 1;
  // children_.size(), read without children_mu_ (the common case: none).
  std::atomic<size_t> nchildren_{0};

  // Guarded by runtime_->nesting_mutex() (the Add/RemoveWatcherLocked
  // callers hold it; the analysis cannot name another kqueue's runtime's
  // mutex, so this one is checked by review): kqueues watching this one.
  std::multiset<Kqueue*> watchers_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_KQUEUE_H_
