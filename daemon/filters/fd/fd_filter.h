// EVFILT_READ, EVFILT_WRITE and EVFILT_EMPTY on file descriptors.
//
// ident is an fd number in the registering process (kn.owner). Whenever the
// filter needs the file it takes a transient copy, uses it and closes it:
// after Attach the daemon holds no reference to the client's file
// (fd_watch.h explains how it is watched anyway).
//
//   Attach   copy the fd (ProcessContext::DupFdStat: EBADF if not open,
//            EOPNOTSUPP for our own device; its statx is the file's
//            identity too); if it is one of our kqueues,
//            EVFILT_READ hands the knote to KqueueReadFilter for good
//            (kn.ops is set to it: later hooks go there, nesting);
//            EVFILT_WRITE and EVFILT_EMPTY on a kqueue are EINVAL, as on
//            BSD; so is EVFILT_EMPTY on anything but a socket. Otherwise
//            record the file's identity and type, and subscribe to an event
//            source: the epoll item of the open file (pollable files; one
//            per open file, shared by its knotes), or an inotify watch
//            (EVFILT_READ on regular files and directories), or none
//            (files that are always ready).
//   Event    copy the fd again (ProcessContext::CopyFd: pidfd_getfd alone)
//            and check at once that the copy is the registered open file:
//            kcmp against the epoll item (FdWatcher::IsSameFile), or, for
//            files without one, st_dev/st_ino/st_rdev/type/access mode. If
//            the fd is closed or names another file now, set Knote::kGone
//            and report nothing — BSD drops knotes on close. Otherwise
//            compute data / EV_EOF / fflags (fd_readiness.h). A pipe or
//            socket knote costs pidfd_getfd, kcmp, its own queries (poll,
//            FIONREAD...) and close. Two of those queries are spared when
//            the answer is known (fd_readiness.h KnownPoll): the
//            registration's evaluation of a new epoll item takes the poll
//            state from the item's add report (FdWatcher::Watch), and the
//            core's own looks at a pipe's read end (the level re-check at
//            collection, EV_ADD) take the hang-up state from the last
//            evaluation of a wake-up, leaving FIONREAD alone: 4 syscalls.
//   StillValid the same check, so EV_ADD on a reused fd number watches the
//            new file.
//   Detach   end the subscription; the last one of an item deletes it with
//            a copy of the same open file if one can still be had.
//
// Within one change the hooks hand each other the checked copy (under the
// kqueue's lock): Attach's to the registration's evaluation, StillValid's
// to the evaluation of an EV_ADD or to the Detach of an EV_DELETE — so an
// EV_DELETE copies the client's fd once, not twice. ChangeDone closes what
// is left at the end of the change: no copy outlives it.
//
// Wake-ups call Knote::Notify from the reactor thread; every evaluation
// recomputes from the file itself, so a spurious wake-up reports nothing
// new, and EV_CLEAR knotes fire once per wake-up of the file (each write to
// a pipe or socket) — never for the state they were registered in, which
// their registration reported (FdWatcher::Watch drops the add report).
//
// EVFILT_EMPTY (FreeBSD's, also in NetBSD 10): fires when the socket's send
// queue is empty — for TCP, everything written has been acknowledged;
// data 0. Its epoll item (EPOLLOUT, as WRITE) is not enough: Linux wakes a
// TCP socket's writers only when a full buffer regains room, never when the
// queue drains. So while an evaluation finds bytes queued, a reactor timer
// looks again after 1 ms, doubling up to 64 ms until the queue is empty.
// An EV_CLEAR knote fires once per drain, as BSD's fires at the wake-up of
// the ACK that empties the buffer: only when the queue drained since the
// last look (bytes were seen queued then; TCP's tcpi_bytes_acked moved; an
// AF_UNIX or datagram socket woke us, which they do when sent memory is
// freed). On TCP, which drains silently, it is also looked at every 64 ms
// while empty, to catch a write and its ACK that both fall between looks.
#ifndef KQUEUED_DAEMON_FILTERS_FD_FD_FILTER_H_
#define KQUEUED_DAEMON_FILTERS_FD_FD_FILTER_H_

#include <cstdint>
#include <memory>

#include "daemon/core/filter_ops.h"
#include "daemon/core/runtime.h"
#include "daemon/filters/fd/fd_watch.h"
#include "daemon/filters/fd/kqueue_read_filter.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

class FdFilter : public FilterOps {
 public:
  // filter: EVFILT_READ, EVFILT_WRITE or EVFILT_EMPTY.
  FdFilter(Runtime* runtime, uint32_t filter);

  bool IsFdFilter() const override { return true; }
  int Attach(Knote& kn) override;
  void Detach(Knote& kn) override;
  bool Event(Knote& kn, long hint) override;
  bool StillValid(Knote& kn) override;
  void ChangeDone(Knote& kn) override;

  // The epoll/inotify multiplexer behind this filter's knotes (tests).
  FdWatcher& watcher() { return *watcher_; }

 private:
  bool read() const { return filter_ == EVFILT_READ; }
  bool empty() const { return filter_ == EVFILT_EMPTY; }
  // A transient copy of the knote's fd if it still names the open file the
  // knote was attached to. Otherwise an invalid ScopedFd, with *gone
  // telling whether the file is surely no longer there (closed, number
  // reused, process gone) rather than just not obtainable right now.
  ScopedFd CopyIfSame(Knote& kn, bool* gone);
  // EVFILT_EMPTY's evaluation of a copy of the knote's socket.
  bool EmptyEvent(Knote& kn, int fd, long hint);
  // EVFILT_EMPTY: makes sure the knote is looked at again later.
  void ScheduleRecheck(Knote& kn);

  const uint32_t filter_;
  Reactor* const reactor_;  // EVFILT_EMPTY's re-check timers
  const std::shared_ptr<FdWatcher> watcher_;
  KqueueReadFilter nested_;  // EVFILT_READ on a kqueue
};

// For the system filter table.
std::shared_ptr<FilterOps> MakeFdFilter(Runtime* runtime, uint32_t filter);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_FD_FD_FILTER_H_
