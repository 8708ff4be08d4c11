#include "daemon/core/kqueue.h"

#include <errno.h>

#include <algorithm>
#include <utility>

#include "daemon/core/filter_ops.h"
#include "daemon/core/filter_registry.h"

namespace kqd {
namespace {

// Changes are fetched from the caller this many at a time.
constexpr size_t kChangeChunk = 64;
// EV_ERROR/EV_RECEIPT answers are copied out at most this many at a time.
constexpr size_t kAnswerChunk = 1024;
// A parked call collects at most this many events per answer chunk when it
// is answered from an event source (the rest stays queued for the next call).
constexpr size_t kMaxCollect = 1u << 20;

constexpr time_t kForeverSeconds = 100LL * 365 * 24 * 3600;

bool ValidTimeout(const timespec& ts) {
  return ts.tv_sec >= 0 && ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000;
}

}  // namespace

void Knote::Notify(const std::weak_ptr<Knote>& weak, long hint) {
  std::shared_ptr<Knote> kn = weak.lock();
  if (!kn) return;
  std::shared_ptr<Kqueue> kq = kn->kq.lock();
  if (!kq) return;
  kq->NotifyKnote(kn, hint);
}

std::shared_ptr<Kqueue> Kqueue::Create(Runtime* runtime, uid_t uid, int* error) {
  auto charge = runtime->limits().Take(uid, Resource::kKqueues);
  if (!charge) {
    *error = EMFILE;
    return nullptr;
  }
  *error = 0;
  return std::shared_ptr<Kqueue>(new Kqueue(runtime, uid, std::move(charge)));
}

Kqueue::Kqueue(Runtime* runtime, uid_t uid,
               std::unique_ptr<UserLimits::Charge> charge)
    : runtime_(runtime), uid_(uid), charge_(std::move(charge)) {}

Kqueue::~Kqueue() {
  // No one else holds this kqueue any more, but the thread destroying it may
  // hold another kqueue's lock: a parent's EVFILT_READ hook can drop the
  // last reference to the child it evaluates. Close would tell the
  // observers — parents' knotes, whose Notify takes the parent's lock — so
  // here they are told from the event loop instead. (Parked calls are
  // answered here: that takes no kqueue lock.)
  std::vector<Deferred::Work> observers;
  {
    Deferred deferred(mu_);
    if (closed_) return;
    CloseLocked(&deferred);
    MutexLock l(observers_mu_);
    for (const auto& [id, fn] : observers_) observers.push_back(fn);
  }
  if (observers.empty()) return;
  runtime_->reactor().Post([observers = std::move(observers)] {
    for (const Deferred::Work& fn : observers) fn();
  });
}

uint64_t Kqueue::Kevent(std::unique_ptr<KeventCall> call) {
  // An invalid timeout fails the call before anything is done, whatever
  // nevents is (NetBSD looks at it only when it scans: with nevents 0 it
  // returns 0 there; docs/abi.md promises EINVAL).
  const timespec* timeout = call->timeout();
  if (timeout != nullptr && !ValidTimeout(*timeout)) {
    call->Complete(0, EINVAL);
    return 0;
  }

  size_t room = call->nevents();
  if (!ApplyChanges(*call, &room)) return 0;
  return Scan(std::move(call), room);
}

bool Kqueue::ApplyChanges(KeventCall& call, size_t* room) {
  const std::shared_ptr<ProcessContext> caller = call.caller();
  const size_t nchanges = call.nchanges();
  // KQ_CHANGE_LOCAL marks count only in the local owner's LOCAL_CHANGES
  // calls. (The owner, once set, stays for the queue's life.)
  bool local_changes = false;
  if (nchanges > 0 && (call.local_flags() & KQ_KEVENT_LOCAL_CHANGES)) {
    MutexLock l(mu_);
    local_changes = IsLocalOwnerLocked(*caller);
  }
  // EV_ERROR/EV_RECEIPT answers, written to the eventlist in one copy when
  // the changes are done (as if written one by one: nothing reads them
  // before the call returns), or every kAnswerChunk answers so the buffer
  // stays small whatever the counts.
  std::vector<kq_kevent> answers;
  size_t nanswers = 0;  // answers written or buffered
  size_t written = 0;   // answers written
  // Writes the buffered answers; false (the call answered) if that failed.
  auto flush = [&]() {
    if (answers.empty()) return true;
    if (int perr = call.PutEvents(written, answers.data(), answers.size())) {
      call.Complete(0, perr);
      return false;
    }
    written += answers.size();
    answers.clear();
    return true;
  };

  kq_kevent chunk[kChangeChunk];
  for (size_t first = 0; first < nchanges; first += kChangeChunk) {
    const size_t n = std::min(kChangeChunk, nchanges - first);
    if (int err = call.FetchChanges(first, chunk, n)) {
      if (flush()) call.Complete(0, err);
      return false;
    }
    for (size_t i = 0; i < n; i++) {
      kq_kevent& kev = chunk[i];
      kev.flags &= ~EV_SYSFLAGS;
      int err;
      {
        Deferred deferred(mu_);
        if (closed_) {
          err = EBADF;
        } else {
          err = RegisterLocked(kev, caller, &deferred);
          AfterChangeLocked(kev, *caller, local_changes && (kev.reserved & KQ_CHANGE_LOCAL));
        }
      }
      if (err == 0 && !(kev.flags & EV_RECEIPT)) continue;
      if (*room == 0) {
        // No room to report it: the call fails with the error (or, for a
        // receipt, stops and returns what it wrote), and the remaining
        // changes are not applied.
        if (flush()) call.Complete(static_cast<int>(nanswers), err);
        return false;
      }
      // The answer is the change as given but for flags and data, and
      // `reserved` (a change's KQ_CHANGE_LOCAL mark, or whatever the caller
      // left there) is zero on output, as on every record we write.
      kq_kevent answer = kev;
      answer.flags = EV_ERROR;
      answer.data = err;
      answer.reserved = 0;
      answers.push_back(answer);
      --*room;
      nanswers++;
      if (answers.size() == kAnswerChunk && !flush()) return false;
    }
  }
  if (nanswers > 0) {
    if (flush()) call.Complete(static_cast<int>(nanswers), 0);
    return false;
  }
  if (*room == 0) {
    call.Complete(0, 0);
    return false;
  }
  return true;
}

uint64_t Kqueue::Scan(std::unique_ptr<KeventCall> call, size_t room) {
  const timespec* timeout = call->timeout();
  // Evaluations from here on are fresh enough for this call.
  const uint64_t since = eval_clock_.load();
  // Causality: every event whose cause the kernel recorded before this call
  // is handed to its knote before the scan (see Reactor's CATCH-UP). Taken
  // without mu_: the sources' callbacks take it.
  runtime_->reactor().CatchUp();
  // The kqueues this one watches drop their stale local knotes first, so
  // the collection's re-check of a nested EVFILT_READ knote reads an exact
  // count (our own local knotes are re-checked by the collection itself).
  // One atomic load when there are none.
  std::vector<std::shared_ptr<Kqueue>> children;  // released after the unlock
  std::vector<std::weak_ptr<Knote>> nested;
  RefreshChildren(0, &children, &nested);

  std::vector<kq_kevent> events;
  uint64_t wait_id = 0;
  {
    Deferred deferred(mu_);
    if (closed_) {
      deferred.RunAfterUnlock(
          [c = call.release()] { std::unique_ptr<KeventCall>(c)->Complete(0, EBADF); });
      return 0;
    }
    const bool owner = IsLocalOwnerLocked(*call->caller());
    if (owner) OwnerCalledLocked();
    const bool skip_local = (call->local_flags() & KQ_KEVENT_SKIP_LOCAL) && owner;
    CollectLocked(room, since, skip_local, &events, &deferred);
    const bool poll = timeout != nullptr && timeout->tv_sec == 0 && timeout->tv_nsec == 0;
    if (events.empty() && !poll) {
      // Park the call; an activation or the timeout answers it.
      wait_id = next_wait_id_++;
      uint64_t timer_id = 0;
      // A timeout past kForeverSeconds (a century) is as good as none, and keeps
      // the deadline arithmetic from overflowing.
      if (timeout != nullptr && timeout->tv_sec < kForeverSeconds) {
        int64_t deadline = Reactor::Now(Reactor::Clock::kMonotonic) +
                           static_cast<int64_t>(timeout->tv_sec) * 1000000000 +
                           timeout->tv_nsec;
        std::weak_ptr<Kqueue> weak = shared_from_this();
        timer_id = runtime_->reactor().AddTimer(
            Reactor::Clock::kMonotonic, deadline, [weak, wait_id] {
              if (auto kq = weak.lock()) kq->ExpireWaiter(wait_id);
            });
      }
      waiters_.push_back(Waiter{wait_id, std::move(call), timer_id, since, skip_local});
      return wait_id;
    }
  }
  Deliver(*call, 0, std::move(events));
  return 0;
}

void Kqueue::Deliver(KeventCall& call, size_t base, std::vector<kq_kevent> events) {
  if (!events.empty()) {
    if (int err = call.PutEvents(base, events.data(), events.size())) {
      call.Complete(0, err);
      return;
    }
  }
  call.Complete(static_cast<int>(events.size()), 0);
}

Kqueue::Key Kqueue::KeyOf(const Knote& kn) {
  return Key{kn.kev.ident, kn.kev.filter, kn.ops->IsFdFilter() ? kn.owner->pid() : 0};
}

int Kqueue::NoKnoteErrorLocked(const kq_kevent& change, const ProcessContext& caller) {
  // The seed's order (kqueue_register): the filter first (EINVAL when
  // unknown or not implemented), then, for a descriptor filter, the
  // descriptor (EBADF when the caller has no such descriptor), and only
  // then the knote (ENOENT). Only on this error path does it cost a copy.
  std::shared_ptr<FilterRegistration> reg;
  if (int err = runtime_->filters().Acquire(change.filter, &reg)) return err;
  if (reg->ops()->IsFdFilter()) {
    if (change.ident > INT32_MAX) return EBADF;
    const int fd = static_cast<int>(change.ident);
    if (!caller.KqueueForFd(fd)) {
      int err = 0;
      ScopedFd copy = caller.DupFd(fd, &err);
      if (!copy && err == EBADF) return EBADF;
    }
  }
  return ENOENT;
}

int Kqueue::RegisterLocked(const kq_kevent& change,
                           const std::shared_ptr<ProcessContext>& caller,
                           Deferred* deferred) {
  // The caller's own fd knote, else a knote of a filter whose idents are
  // not descriptors (a filter is one or the other: one lookup finds it).
  Key key{change.ident, change.filter, caller->pid()};
  std::shared_ptr<FilterRegistration> reg;
  auto it = knotes_.find(key);
  if (it == knotes_.end()) it = knotes_.find(Key{change.ident, change.filter, 0});
  std::shared_ptr<Knote> kn = it == knotes_.end() ? nullptr : it->second;
  // Whatever knote the change ends up naming hears of its end (every exit
  // below): FilterOps::ChangeDone.
  struct ChangeEnd {
    const std::shared_ptr<Knote>& kn;
    ~ChangeEnd() {
      if (kn && kn->ops != nullptr && !(kn->status & Knote::kDetached)) kn->ops->ChangeDone(*kn);
    }
  } change_end{kn};

  // A knote on an fd that was closed (or whose number now names another
  // file) is gone, as on BSD where close() removes it.
  if (kn && kn->ops->IsFdFilter() && !kn->ops->StillValid(*kn)) {
    DetachLocked(kn);
    kn = nullptr;
  }

  if (change.flags & EV_ADD) {
    if (!kn) {
      if (int err = runtime_->filters().Acquire(change.filter, &reg)) return err;
      if (reg->ops()->IsFdFilter() && change.ident > INT32_MAX) return EBADF;
      if (!reg->ops()->IsFdFilter()) std::get<2>(key) = 0;
      // Charged to whoever adds it, not to the queue's opener: a process
      // that was given the queue spends its own user's quota.
      auto charge = runtime_->limits().Take(caller->euid(), Resource::kKnotes);
      if (!charge) return ENOMEM;
      // A descriptor knote may take one of the fd filters' shared key
      // numbers: those are shared among all users, so each user's are
      // bounded (Resource::kWatchedFds).
      std::unique_ptr<UserLimits::Charge> fd_charge;
      if (reg->ops()->IsFdFilter()) {
        fd_charge = runtime_->limits().Take(caller->euid(), Resource::kWatchedFds);
        if (!fd_charge) return ENOMEM;
      }
      kn = std::make_shared<Knote>();
      kn->ops = reg->ops();
      kn->owner = caller;
      kn->kq = weak_from_this();
      kn->sfflags = change.fflags;
      kn->sdata = change.data;
      kn->kev = change;
      kn->kev.fflags = 0;
      kn->kev.data = 0;
      kn->kev.reserved = 0;
      kn->kev.flags |= kn->ops->ImpliedFlags();
      if (int err = kn->ops->Attach(*kn)) return err;
      kn->registration_ = std::move(reg);
      kn->charge_ = std::move(charge);
      kn->fd_charge_ = std::move(fd_charge);
      knotes_.emplace(key, kn);
    } else {
      // Updates saved fflags, data and udata only: a triggered event is not
      // reset and a disabled knote stays disabled (unless EV_ENABLE).
      if (int err = kn->ops->Touch(*kn, change)) return err;
      kn->kev.udata = change.udata;
    }
    // Evaluated even when disabled (as the seed does): ActivateLocked keeps a
    // disabled knote off the queue, and EV_ENABLE then reports it.
    bool fire = EvaluateLocked(*kn, kHintEvaluate);
    if (kn->status & Knote::kGone) {
      DetachLocked(kn);
      return EBADF;
    }
    if (fire) ActivateLocked(*kn, deferred);
  } else {
    if (!kn) return NoKnoteErrorLocked(change, *caller);
    if (change.flags & EV_DELETE) {
      DetachLocked(kn);
      return 0;
    }
    // An update without EV_ADD (EVFILT_USER's NOTE_TRIGGER, as FreeBSD and
    // later NetBSD allow): a change carrying fflags is passed to Touch, then
    // the knote is evaluated even if disabled — ActivateLocked keeps it off
    // the queue, so EV_ENABLE reports what happened meanwhile. A plain
    // EV_ENABLE/EV_DISABLE (fflags 0) touches nothing, as before.
    if (change.fflags != 0) {
      if (int err = kn->ops->Touch(*kn, change)) return err;
      bool fire = EvaluateLocked(*kn, kHintEvaluate);
      if (kn->status & Knote::kGone) {
        DetachLocked(kn);
        return EBADF;
      }
      if (fire) ActivateLocked(*kn, deferred);
    }
  }

  if (change.flags & EV_DISABLE) {
    kn->status |= Knote::kDisabled;
    DequeueLocked(*kn);  // stays active: EV_ENABLE queues it again
  }
  if (change.flags & EV_ENABLE) {
    kn->status &= ~Knote::kDisabled;
    if (kn->status & Knote::kActive) {
      EnqueueLocked(*kn, deferred);
      ServeWaitersLocked(deferred);
    }
  }
  return 0;
}

bool Kqueue::EvaluateLocked(Knote& kn, long hint) {
  // Stamped when the evaluation begins, not when it ends: a call that read
  // the clock before this stamp may have been preceded by something that
  // changed the condition while the filter was looking (a reader draining
  // the pipe between the filter's poll and the stamp), so only an
  // evaluation that began after the call's clock reading counts as fresh
  // for it (CollectLocked). Stamping at the end let a stale "fire" through.
  kn.evaluated_at_ = ++eval_clock_;
  // A wake-up that went unevaluated is looked at now as the wake-up it was:
  // a filter may trust what its last look found only if it saw every wake.
  if (hint == kHintEvaluate) hint = std::exchange(kn.unevaluated_wake_, kHintEvaluate);
  kn.unevaluated_wake_ = kHintEvaluate;
  const bool fire = kn.ops->Event(kn, hint);
  kn.evaluated_fire_ = fire;
  return fire;
}

size_t Kqueue::CollectLocked(size_t max, uint64_t since, bool skip_local,
                             std::vector<kq_kevent>* out, Deferred* deferred) {
  // Knotes put back on the tail during this pass must not be seen twice:
  // look at no more than were queued when it began. `next` walks past the
  // local knotes a SKIP_LOCAL call leaves where they are; every other knote
  // is taken off the queue (and put back on the tail if still active).
  // Nothing below removes any knote from the queue but the one at hand, so
  // `next` stays valid.
  size_t budget = queue_.size();
  auto next = queue_.begin();
  while (budget-- > 0 && out->size() < max && next != queue_.end()) {
    std::shared_ptr<Knote> kn = *next;
    ++next;
    if (skip_local && kn->local_) continue;
    DequeueLocked(*kn);
    if (kn->status & Knote::kDisabled) continue;
    const uint32_t flags = kn->kev.flags;
    // Level-triggered: re-evaluate and drop it if the condition is gone —
    // unless it was evaluated, and found firing, after the call began (in
    // its catch-up, or while it was parked): NetBSD's re-check at
    // collection would see the same state, so the activation costs one
    // evaluation, not two. (A "no" is always re-checked: a filter's event
    // hint may say no for a reason of its own, a stale timer callback say.)
    const bool fresh = kn->evaluated_at_ > since && kn->evaluated_fire_ &&
                       kn->ops->FreshEvaluationSuffices();
    if (!(flags & EV_ONESHOT) && !fresh) {
      bool fire = EvaluateLocked(*kn, kHintEvaluate);
      if (kn->status & Knote::kGone) {
        DetachLocked(kn);
        continue;
      }
      if (!fire) {
        kn->status &= ~Knote::kActive;
        continue;
      }
    }
    out->push_back(kn->kev);
    if (flags & EV_ONESHOT) {
      DetachLocked(kn);
      continue;
    }
    if (flags & EV_CLEAR) {
      kn->kev.data = 0;
      kn->kev.fflags = 0;
      kn->status &= ~Knote::kActive;
    }
    if (flags & EV_DISPATCH) {
      kn->status |= Knote::kDisabled;
      continue;
    }
    if (kn->status & Knote::kActive) EnqueueLocked(*kn, deferred);
  }
  return out->size();
}

void Kqueue::Refresh() { RefreshAt(0); }

void Kqueue::RefreshChildren(int depth, std::vector<std::shared_ptr<Kqueue>>* children,
                             std::vector<std::weak_ptr<Knote>>* knotes) {
  // Deeper than any nesting a program makes on purpose; a walk this deep is
  // one that raced with the graph being rewired (each level is copied at
  // its own moment), and stops.
  constexpr int kMaxDepth = 16;
  if (nchildren_.load() == 0) return;
  {
    MutexLock l(children_mu_);
    for (const auto& [id, w] : children_) {
      if (std::shared_ptr<Kqueue> c = w.child.lock()) children->push_back(std::move(c));
      knotes->push_back(w.knote);
    }
  }
  if (depth >= kMaxDepth) return;
  for (const std::shared_ptr<Kqueue>& c : *children) c->RefreshAt(depth + 1);
}

void Kqueue::RefreshAt(int depth) {
  // Declared before the lock: a child whose last reference is here goes
  // after the unlock (its destructor takes its own lock).
  std::vector<std::shared_ptr<Kqueue>> children;
  std::vector<std::weak_ptr<Knote>> nested;
  RefreshChildren(depth, &children, &nested);
  if (!has_local_.load() && nested.empty()) return;
  MutexLock l(mu_);
  if (closed_) return;
  for (const std::weak_ptr<Knote>& weak : nested) {
    std::shared_ptr<Knote> kn = weak.lock();
    if (kn && (kn->status & Knote::kQueued)) RecheckQueuedLocked(kn);
  }
  if (local_knotes_ == 0) return;
  // As in CollectLocked: `next` stays valid, as nothing below removes a
  // knote from the queue but the one at hand.
  for (auto next = queue_.begin(); next != queue_.end();) {
    std::shared_ptr<Knote> kn = *next;
    ++next;
    if (kn->local_) RecheckQueuedLocked(kn);
  }
}

void Kqueue::RecheckQueuedLocked(const std::shared_ptr<Knote>& kn) {
  if ((kn->status & (Knote::kDisabled | Knote::kDetached)) || (kn->kev.flags & EV_ONESHOT))
    return;
  const bool fire = EvaluateLocked(*kn, kHintEvaluate);
  if (kn->status & Knote::kGone) {
    DetachLocked(kn);
    return;
  }
  if (!fire) {
    kn->status &= ~Knote::kActive;
    DequeueLocked(*kn);
  }
}

uint64_t Kqueue::AddWatchedChild(std::weak_ptr<Kqueue> child, std::weak_ptr<Knote> knote) {
  MutexLock l(children_mu_);
  const uint64_t id = next_child_++;
  children_.emplace(id, WatchedChild{std::move(child), std::move(knote)});
  nchildren_ = children_.size();
  return id;
}

void Kqueue::RemoveWatchedChild(uint64_t id) {
  MutexLock l(children_mu_);
  children_.erase(id);
  nchildren_ = children_.size();
}

void Kqueue::ActivateLocked(Knote& kn, Deferred* deferred) {
  kn.status |= Knote::kActive;
  if (kn.status & Knote::kDisabled) return;
  EnqueueLocked(kn, deferred);
  ServeWaitersLocked(deferred);
}

void Kqueue::EnqueueLocked(Knote& kn, Deferred* deferred) {
  if (kn.status & (Knote::kQueued | Knote::kDetached)) return;
  kn.status |= Knote::kQueued;
  kn.queue_pos_ = queue_.insert(queue_.end(), kn.shared_from_this());
  pending_ = queue_.size();
  if (queue_.size() == 1) NotifyObserversLater(deferred);
}

void Kqueue::DequeueLocked(Knote& kn) {
  if (!(kn.status & Knote::kQueued)) return;
  kn.status &= ~Knote::kQueued;
  queue_.erase(kn.queue_pos_);
  pending_ = queue_.size();
}

void Kqueue::DetachLocked(const std::shared_ptr<Knote>& kn) {
  if (kn->status & Knote::kDetached) return;
  DequeueLocked(*kn);
  kn->status |= Knote::kDetached;
  kn->ops->Detach(*kn);
  knotes_.erase(KeyOf(*kn));
  SetLocalLocked(*kn, false);
  UpdateLocalSignalLocked();
}

int Kqueue::AttachLocal(std::shared_ptr<ProcessContext> owner,
                        std::unique_ptr<LocalSignal> signal) {
  std::unique_ptr<LocalSignal> unused;  // dropped after the unlock
  MutexLock l(mu_);
  if (closed_ || local_owner_) {
    unused = std::move(signal);
    return closed_ ? EBADF : EBUSY;
  }
  local_owner_ = std::move(owner);
  {
    MutexLock s(signal_mu_);
    local_signal_ = std::move(signal);
    signal_owner_ = local_owner_;
    local_signal_set_ = false;
    owner_closed_ = false;
  }
  UpdateLocalSignalLocked();
  return 0;
}

bool Kqueue::HasLocalOwner() const {
  MutexLock l(mu_);
  return local_owner_ != nullptr;
}

void Kqueue::OwnerClosedDescriptor(const ProcessContext& closer) {
  MutexLock l(signal_mu_);
  if (!local_signal_ || !signal_owner_ || !signal_owner_->SameProcess(closer)) return;
  owner_closed_ = true;
  if (local_signal_set_) return;
  local_signal_->Set(true);
  local_signal_set_ = true;
}

bool Kqueue::HasLocalSignal() const {
  MutexLock l(signal_mu_);
  return local_signal_ != nullptr;
}

void Kqueue::OwnerCalledLocked() {
  {
    MutexLock l(signal_mu_);
    if (!owner_closed_) return;
    owner_closed_ = false;
  }
  UpdateLocalSignalLocked();
}

bool Kqueue::IsLocalOwnerLocked(const ProcessContext& caller) const {
  return local_owner_ && local_owner_->SameProcess(caller);
}

void Kqueue::AfterChangeLocked(const kq_kevent& change, const ProcessContext& caller,
                               bool mark) {
  if (!local_owner_) return;  // no local owner: nothing is ever local
  // The knote the change named, found as RegisterLocked finds it.
  auto it = knotes_.find(Key{change.ident, change.filter, caller.pid()});
  if (it == knotes_.end()) it = knotes_.find(Key{change.ident, change.filter, 0});
  if (it != knotes_.end()) {
    Knote& kn = *it->second;
    const bool local = mark && !(kn.status & Knote::kDisabled) &&
                       (kn.kev.filter == EVFILT_READ || kn.kev.filter == EVFILT_WRITE) &&
                       !(kn.kev.flags & (EV_CLEAR | EV_ONESHOT | EV_DISPATCH)) &&
                       !(kn.sfflags & NOTE_LOWAT);
    SetLocalLocked(kn, local);
  }
  UpdateLocalSignalLocked();
}

void Kqueue::SetLocalLocked(Knote& kn, bool local) {
  if (kn.local_ == local) return;
  kn.local_ = local;
  if (local) {
    local_knotes_++;
  } else {
    local_knotes_--;
  }
  has_local_ = local_knotes_ > 0;
}

void Kqueue::UpdateLocalSignalLocked() {
  MutexLock l(signal_mu_);
  if (!local_signal_) return;
  const bool readable = knotes_.size() > local_knotes_ || owner_closed_;
  if (readable == local_signal_set_) return;
  local_signal_->Set(readable);
  local_signal_set_ = readable;
}

void Kqueue::ServeWaitersLocked(Deferred* deferred) {
  auto it = waiters_.begin();
  while (it != waiters_.end() && !queue_.empty()) {
    Waiter& w = *it;
    std::vector<kq_kevent> events;
    CollectLocked(std::min(w.call->nevents(), kMaxCollect), w.since, w.skip_local, &events,
                  deferred);
    if (events.empty()) {
      // A SKIP_LOCAL call found only local knotes: a later call may take
      // them. Otherwise everything queued turned out stale.
      if (w.skip_local) {
        ++it;
        continue;
      }
      return;
    }
    if (w.timer_id != 0) runtime_->reactor().CancelTimer(w.timer_id);
    std::shared_ptr<KeventCall> call(std::move(w.call));
    it = waiters_.erase(it);
    // Whoever runs this is not the caller's serving thread: the copy into
    // the caller's eventlist goes where the call says it may wait.
    deferred->RunAfterUnlock([call, ev = std::move(events)]() mutable {
      KeventCall* c = call.get();
      c->RunParkedAnswer([call = std::move(call), ev = std::move(ev)]() mutable {
        Deliver(*call, 0, std::move(ev));
      });
    });
  }
}

void Kqueue::NotifyObserversLater(Deferred* deferred) {
  MutexLock l(observers_mu_);
  for (const auto& [id, fn] : observers_) deferred->RunAfterUnlock(fn);
}

void Kqueue::NotifyKnote(const std::shared_ptr<Knote>& kn, long hint) {
  Deferred deferred(mu_);
  if (kn->status & Knote::kDetached) return;
  if (kn->local_) {
    // The local owner collects it from its own epoll instance; the daemon
    // queues it as it is, and the next call that looks at it (any but the
    // owner's SKIP_LOCAL ones) evaluates it then, as this wake-up — so a
    // wake costs the daemon no look at the client's file. A queued knote
    // that turns out not to fire is dropped by that look (the level
    // re-check), as a stale activation always is.
    if (hint != kHintEvaluate) kn->unevaluated_wake_ = hint;
    kn->evaluated_fire_ = false;  // nothing fresh for a collection to trust
    ActivateLocked(*kn, &deferred);
    return;
  }
  bool fire = EvaluateLocked(*kn, hint);
  if (kn->status & Knote::kGone) {
    DetachLocked(kn);
    return;
  }
  if (fire) ActivateLocked(*kn, &deferred);
}

void Kqueue::ExpireWaiter(uint64_t wait_id) {
  Deferred deferred(mu_);
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (it->id != wait_id) continue;
    KeventCall* call = it->call.release();
    waiters_.erase(it);
    deferred.RunAfterUnlock([call] { std::unique_ptr<KeventCall>(call)->Complete(0, 0); });
    return;
  }
}

void Kqueue::Interrupt(uint64_t wait_id) {
  Deferred deferred(mu_);
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (it->id != wait_id) continue;
    if (it->timer_id != 0) runtime_->reactor().CancelTimer(it->timer_id);
    KeventCall* call = it->call.release();
    waiters_.erase(it);
    deferred.RunAfterUnlock([call] { std::unique_ptr<KeventCall>(call)->Complete(0, EINTR); });
    return;
  }
}

void Kqueue::DescriptorClosed() {
  Deferred deferred(mu_);
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (!it->call->DescriptorClosed()) {
      ++it;
      continue;
    }
    if (it->timer_id != 0) runtime_->reactor().CancelTimer(it->timer_id);
    KeventCall* call = it->call.release();
    it = waiters_.erase(it);
    deferred.RunAfterUnlock([call] { std::unique_ptr<KeventCall>(call)->Complete(0, EBADF); });
  }
}

void Kqueue::Close() {
  Deferred deferred(mu_);
  if (closed_) return;
  CloseLocked(&deferred);
  // Kqueues watching this one re-evaluate their knotes on it, which find
  // it closed and drop them (as BSD's close removes knotes on a file).
  NotifyObserversLater(&deferred);
}

void Kqueue::CloseLocked(Deferred* deferred) {
  closed_ = true;
  // The signal is left readable and handed, after the unlock, to the
  // owner's process, which keeps it (bounded) while it lives: a call of the
  // owner's library parked in, or harvesting from, its epoll instance then
  // turns to the daemon and meets EBADF from the kernel (docs/abi.md).
  {
    MutexLock l(signal_mu_);
    if (local_signal_) {
      if (!local_signal_set_) local_signal_->Set(true);
      LocalSignal* signal = local_signal_.release();
      deferred->RunAfterUnlock([owner = std::move(local_owner_), signal] {
        owner->KeepClosedQueueSignal(std::unique_ptr<LocalSignal>(signal));
      });
    }
    signal_owner_.reset();
    local_signal_set_ = false;
    owner_closed_ = false;
  }
  local_owner_.reset();
  while (!knotes_.empty()) {
    std::shared_ptr<Knote> kn = knotes_.begin()->second;
    DetachLocked(kn);
  }
  for (Waiter& w : waiters_) {
    if (w.timer_id != 0) runtime_->reactor().CancelTimer(w.timer_id);
    KeventCall* call = w.call.release();
    deferred->RunAfterUnlock([call] { std::unique_ptr<KeventCall>(call)->Complete(0, EBADF); });
  }
  waiters_.clear();
}

int Kqueue::AttachChild(const kq_kevent& kev,
                        const std::shared_ptr<ProcessContext>& owner) {
  Deferred deferred(mu_);
  if (closed_) return EBADF;
  int err = RegisterLocked(kev, owner, &deferred);
  AfterChangeLocked(kev, *owner, false);
  return err;
}

size_t Kqueue::Pending() const { return pending_; }

Kqueue::Stats Kqueue::Snapshot() const {
  Stats s;
  MutexLock l(mu_);
  s.knotes = knotes_.size();
  s.pending = queue_.size();
  s.waiters = waiters_.size();
  s.local = local_knotes_;
  for (const auto& entry : knotes_) s.knotes_by_filter[entry.second->kev.filter]++;
  return s;
}

uint64_t Kqueue::AddReadinessObserver(std::function<void()> fn) {
  MutexLock l(observers_mu_);
  uint64_t id = next_observer_++;
  observers_.emplace(id, std::move(fn));
  return id;
}

void Kqueue::RemoveReadinessObserver(uint64_t id) {
  MutexLock l(observers_mu_);
  observers_.erase(id);
}

int Kqueue::AddWatcherLocked(Kqueue* parent) {
  // A cycle exists if this kqueue already watches `parent`, directly or
  // through others — that is, if `parent` is watched (transitively) by
  // this one; walking up from `parent` would reach us.
  std::vector<const Kqueue*> stack{parent};
  std::set<const Kqueue*> seen;
  while (!stack.empty()) {
    const Kqueue* k = stack.back();
    stack.pop_back();
    if (k == this) return ELOOP;
    if (!seen.insert(k).second) continue;
    for (const Kqueue* w : k->watchers_) stack.push_back(w);
  }
  watchers_.insert(parent);
  return 0;
}

void Kqueue::RemoveWatcherLocked(Kqueue* parent) {
  auto it = watchers_.find(parent);
  if (it != watchers_.end()) watchers_.erase(it);
}

}  // namespace kqd
