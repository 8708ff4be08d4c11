#include "daemon/filters/fd/kqueue_read_filter.h"

#include <errno.h>

#include <memory>
#include <mutex>

#include "daemon/core/kqueue.h"
#include "daemon/core/process_context.h"
#include "daemon/core/runtime.h"

namespace kqd {
namespace {

constexpr long kHintChildReady = 1;

struct KqueueReadState : KnoteState {
  std::weak_ptr<Kqueue> child;
  // The kqueue the knote is in. Raw: Detach runs from that kqueue's Close,
  // even from its destructor, when no shared_ptr to it can be had any more.
  Kqueue* parent = nullptr;
  Runtime* runtime = nullptr;
  uint64_t observer = 0;
  uint64_t watched = 0;  // the parent's AddWatchedChild id
};

int Fd(const Knote& kn) { return static_cast<int>(kn.kev.ident); }

}  // namespace

int KqueueReadFilter::Attach(Knote& kn) {
  std::shared_ptr<Kqueue> child = kn.owner->KqueueForFd(Fd(kn));
  if (!child) return EBADF;
  std::shared_ptr<Kqueue> parent = kn.kq.lock();
  if (!parent) return EBADF;
  Runtime* runtime = parent->runtime();
  {
    MutexLock l(runtime->nesting_mutex());
    if (int err = child->AddWatcherLocked(parent.get())) return err;  // ELOOP
  }
  auto st = std::make_unique<KqueueReadState>();
  st->child = child;
  st->parent = parent.get();
  st->runtime = runtime;
  // Takes only the child's observer lock (a leaf), not its kqueue lock.
  // The observer runs with no lock held: the child drops its stale local
  // knotes first, so the count this knote's evaluation reads is exact (a
  // parked call on the parent is not woken for a pipe its owner drained).
  std::weak_ptr<Knote> weak = kn.weak_from_this();
  std::weak_ptr<Kqueue> weak_child = child;
  st->observer = child->AddReadinessObserver([weak, weak_child] {
    if (std::shared_ptr<Kqueue> c = weak_child.lock()) c->Refresh();
    Knote::Notify(weak, kHintChildReady);
  });
  // The parent refreshes the child before it collects or answers a poll.
  st->watched = parent->AddWatchedChild(child, weak);
  kn.state = std::move(st);
  return 0;
}

void KqueueReadFilter::Detach(Knote& kn) {
  auto* st = kn.state_as<KqueueReadState>();
  if (st == nullptr) return;
  st->parent->RemoveWatchedChild(st->watched);
  if (std::shared_ptr<Kqueue> child = st->child.lock()) {
    child->RemoveReadinessObserver(st->observer);
    MutexLock l(st->runtime->nesting_mutex());
    child->RemoveWatcherLocked(st->parent);
  }
  // A child already destroyed took its watcher list with it.
}

bool KqueueReadFilter::Event(Knote& kn, long hint) {
  auto* st = kn.state_as<KqueueReadState>();
  std::shared_ptr<Kqueue> child = st->child.lock();
  if (!child || kn.owner->KqueueForFd(Fd(kn)) != child) {
    kn.status |= Knote::kGone;  // the fd was closed or names something else
    return false;
  }
  kn.kev.data = static_cast<int64_t>(child->Pending());
  return kn.kev.data > 0;
}

bool KqueueReadFilter::StillValid(Knote& kn) {
  auto* st = kn.state_as<KqueueReadState>();
  std::shared_ptr<Kqueue> child = st->child.lock();
  return child && kn.owner->KqueueForFd(Fd(kn)) == child;
}

}  // namespace kqd
