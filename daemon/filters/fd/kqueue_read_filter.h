// EVFILT_READ on a kqueue descriptor (nesting), as the seed's filt_kqueue:
// data = the watched kqueue's pending count, fires while it is > 0.
//
// EVFILT_READ on an fd first asks the registering process whether the fd is
// one of our kqueues (ProcessContext::KqueueForFd) and, if so, attaches the
// knote here and sets kn.ops to this filter: the ops are chosen once, at
// attach, as the seed's filt_fileattach does (see fd_filter.h).
//
// Wake-ups: a readiness observer on the child kqueue (it runs, with no lock
// held, whenever the child's queue becomes non-empty) refreshes the child
// (Kqueue::Refresh) and notifies the knote.
//
// Exactness: a child's local knotes (ABI 4) can go stale without the daemon
// hearing of it (the owner drains the file through its own epoll). The
// knote is registered with its parent (AddWatchedChild), which refreshes
// the child before it collects or answers a poll, so the child's count is
// exact when this filter reads it.
//
// Cycles: a kqueue may not (transitively) watch itself. Attach records the
// edge parent -> child under the runtime's nesting mutex and fails with
// ELOOP if it would close a cycle (BSD would recurse forever evaluating it).
//
// Locks: the hooks run under the parent's lock and never take the child's
// (the refreshes above happen before the parent's lock is taken):
// Kqueue::Pending() and the observer methods take no kqueue lock, so no
// order between two kqueues' locks arises, whichever way they are nested
// over time. The observer callback runs with no lock held.
//
// Lifetime: the knote holds the child weakly, like every fd knote holds
// nothing: when the client's fd no longer names that kqueue (closed,
// reused), the knote is gone.
#ifndef KQUEUED_DAEMON_FILTERS_FD_KQUEUE_READ_FILTER_H_
#define KQUEUED_DAEMON_FILTERS_FD_KQUEUE_READ_FILTER_H_

#include "daemon/core/filter_ops.h"

namespace kqd {

class KqueueReadFilter : public FilterOps {
 public:
  bool IsFdFilter() const override { return true; }
  // EBADF if the fd is not a kqueue, ELOOP for a cycle (a kqueue watching
  // itself included).
  int Attach(Knote& kn) override;
  void Detach(Knote& kn) override;
  bool Event(Knote& kn, long hint) override;
  bool StillValid(Knote& kn) override;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_FD_KQUEUE_READ_FILTER_H_
