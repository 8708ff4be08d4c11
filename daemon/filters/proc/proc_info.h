// proc_info: EVFILT_PROC's permission rules. (What it reads about processes
// comes from daemon/os: proc_files.h and pidfd.h.)
#ifndef KQUEUED_DAEMON_FILTERS_PROC_PROC_INFO_H_
#define KQUEUED_DAEMON_FILTERS_PROC_PROC_INFO_H_

#include "daemon/core/process_context.h"
#include "daemon/os/proc_files.h"

namespace kqd {

// kill(2)'s permission rule, which the project applies to an EVFILT_PROC
// registration: the watcher's real or effective uid equals the target's
// real or saved set-user-ID, or the watcher has CAP_KILL. (NetBSD applies
// KAUTH_PROCESS_KEVENT_FILTER instead — see MayTrack — which also refuses
// a set-id target of the same user; docs/filters.md lists the difference.)
bool MaySignal(const ProcessContext& watcher, const ProcStatus& target);

// Whether /proc shows the process "set-id": its effective or saved user or
// group id differs from the real one (it ran a set-id program, or changed
// ids without dropping them all). NetBSD's PK_SUGID is wider — any id
// change, inherited by fork — which the tracker follows from the proc
// connector's id events (IdMark in proc_tracker.h).
bool IsSetId(const ProcStatus& creds);

// NetBSD's KAUTH_PROCESS_KEVENT_FILTER, which authorises the knote NOTE_TRACK
// attaches to a new child with the FORKING process's credentials
// (`forker`): allowed if the forker is root (effective uid 0), or if its
// real uid is the child's and the child is not set-id.
bool MayTrack(const ProcStatus& forker, const ProcStatus& child);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_PROC_PROC_INFO_H_
