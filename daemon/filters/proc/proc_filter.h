// EVFILT_PROC: events of any process the registering process may signal
// (NetBSD's filt_proc*, with FreeBSD's later fixes).
//
// Registration. ident is a pid (a process, not a thread id). ESRCH if there
// is no such process; EACCES unless kill(2) would let the registering
// process signal it (its real or effective uid equals the target's real or
// saved set-user-ID, or it has CAP_KILL); the check is made once, at
// registration. EV_CLEAR is implied. fflags choose among NOTE_EXIT,
// NOTE_FORK, NOTE_EXEC and NOTE_TRACK; other bits (NOTE_PDATAMASK...) are
// ignored. A zombie can be registered: its exit is reported straight away
// (FreeBSD; NetBSD says ESRCH). Watching one's own pid works.
//
// Reports. fflags = the notes that happened since the last retrieval, among
// those asked for; data 0, except:
//   exit   flags |= EV_EOF | EV_ONESHOT (the knote is deleted once
//          retrieved), data = the wait(2)-style status. Reported whether or
//          not NOTE_EXIT was asked for; fflags has NOTE_EXIT only if it was
//          (so it may be 0), as in NetBSD.
//   track  NOTE_TRACK: when the process forks, a knote is attached to the
//          child on the same kqueue (fflags as the parent's, same udata and
//          flags) and reports NOTE_CHILD with data = the parent's pid. It
//          is authorised as NetBSD does, with the FORKING process's
//          credentials and KAUTH_PROCESS_KEVENT_FILTER: the forker is root,
//          or has the child's real uid and the child is not set-id (the
//          registering process's rights do not matter). If it is refused or
//          cannot be attached (the user's knote limit, a knote for that pid
//          already there and exited), the parent's knote reports
//          NOTE_TRACKERR. NOTE_CHILD and
//          the child's exit are never merged (FreeBSD PR 180385): an exit
//          that arrives before NOTE_CHILD was retrieved is reported by the
//          next event on that knote.
// New threads are not forks. An exec by a non-leader thread is reported for
// the process. Forks and execs that happened before the registration are
// not reported, even when the daemon reads them only afterwards (the
// kernel's timestamps tell).
//
// Sources. The proc connector (ProcEvents) gives forks, execs and exit
// statuses in order. Each watched process also has a pidfd — one per
// process, shared by every knote on it, however many kqueues — whose
// readability is the authority for "has exited": a thread's exit is not the
// process's, and an exit event lost to a connector overflow must not lose
// the exit. The status comes from the connector's exit event, else from
// /proc/<pid>/stat while the process is a zombie, else (already reaped, and
// the event lost) 0. An exit is reported some 10 ms after it happened: the
// kernel sends the last exit event (with the status) just after the pidfd
// turns readable, and earlier events still queued must come first
// (proc_tracker.h explains).
//
// Without the connector (another namespace, an old kernel), pass null
// events: exits are still reported through the pidfds (status from /proc
// while a zombie, else 0), NOTE_FORK, NOTE_EXEC and NOTE_TRACK never fire.
//
// Overflow (the connector's buffer filled and events were lost): exits are
// not lost (pidfds), their status may be (0 for a process already reaped).
// Lost forks of NOTE_TRACK processes are found by listing their children
// (/proc/<pid>/task/*/children) and reported late, NOTE_CHILD and NOTE_FORK
// as usual; children that were forked and reaped within the gap are not.
//
// Pids are the initial pid namespace's: the daemon must run there (so must
// its clients, for the pids they name to mean the same processes).
//
// File descriptors: one pidfd per distinct watched process. The daemon's fd
// budget is thus bounded by the number of processes users may watch, itself
// bounded by the per-uid knote limit (LimitConfig::knotes), and watching one
// process from many kqueues costs one fd. Should pidfd_open still fail for
// want of fds, the knote works from connector events alone (see proc_tracker.h).
#ifndef KQUEUED_DAEMON_FILTERS_PROC_PROC_FILTER_H_
#define KQUEUED_DAEMON_FILTERS_PROC_PROC_FILTER_H_

#include <memory>

#include "daemon/core/filter_ops.h"
#include "daemon/core/runtime.h"
#include "daemon/filters/proc/proc_events.h"

namespace kqd {

// The filter ops; `runtime` must outlive them. `events` may be null (see
// above); the filter subscribes to it for its whole life.
std::shared_ptr<FilterOps> MakeProcFilter(Runtime* runtime,
                                          std::shared_ptr<ProcEvents> events);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_PROC_PROC_FILTER_H_
