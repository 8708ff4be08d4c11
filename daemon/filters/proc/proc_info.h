// proc_info: EVFILT_PROC's permission rule. (What it reads about processes
// comes from daemon/os: proc_files.h and pidfd.h.)
#ifndef KQUEUED_DAEMON_FILTERS_PROC_PROC_INFO_H_
#define KQUEUED_DAEMON_FILTERS_PROC_PROC_INFO_H_

#include "daemon/core/process_context.h"
#include "daemon/os/proc_files.h"

namespace kqd {

// kill(2)'s permission rule, which NetBSD's EVFILT_PROC applies: the
// watcher's real or effective uid equals the target's real or saved
// set-user-ID, or the watcher has CAP_KILL.
bool MaySignal(const ProcessContext& watcher, const ProcStatus& target);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_PROC_PROC_INFO_H_
