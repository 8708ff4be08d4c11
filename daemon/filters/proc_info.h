// proc_info: what EVFILT_PROC reads about a process from /proc and pidfds.
// Small, allocation-light readers: they run under the proc tracker's lock
// and on the event loop.
#ifndef KQUEUED_DAEMON_FILTERS_PROC_INFO_H_
#define KQUEUED_DAEMON_FILTERS_PROC_INFO_H_

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "daemon/core/process_context.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

// /proc/<pid>/status: the thread-group id and the Uid: line (real,
// effective, saved set-user-ID; the fs uid is not needed).
struct ProcCreds {
  pid_t tgid = 0;
  uid_t ruid = 0;
  uid_t euid = 0;
  uid_t suid = 0;
};
bool ReadProcCreds(pid_t pid, ProcCreds* out);

// /proc/<pid>/stat: state (field 3), ppid (4), starttime (22, clock ticks
// since boot: with the pid it names one process for good) and exit_code (52,
// the wait(2)-style status, meaningful while the process is a zombie; the
// kernel shows it only to readers that may ptrace the process, as root may).
struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  uint64_t starttime = 0;
  int exit_code = 0;
};
bool ReadProcStat(pid_t pid, ProcStat* out);

// The children of every thread of `pid` (/proc/<pid>/task/*/children),
// zombies included. Empty if the process is gone.
std::vector<pid_t> ListChildren(pid_t pid);

// kill(2)'s permission rule, which NetBSD's EVFILT_PROC applies: the
// watcher's real or effective uid equals the target's real or saved
// set-user-ID, or the watcher has CAP_KILL.
bool MaySignal(const ProcessContext& watcher, const ProcCreds& target);

// pidfd_open(pid, 0), close-on-exec (as every pidfd is). Invalid with errno
// set on failure: ESRCH for no such process, EINVAL for a thread that is not
// a thread-group leader.
ScopedFd OpenPidfd(pid_t pid);

// Whether the process behind `pidfd` still holds its pid (alive or a
// zombie): false once it has been reaped, when its pid may name another
// process. Signal 0 checks existence without sending anything.
bool PidfdHoldsPid(int pidfd);

// Whether the process behind `pidfd` has exited (the pidfd is readable).
bool PidfdExited(int pidfd);

// The wait(2)-style status of the process behind `pidfd` once it has been
// reaped (PIDFD_GET_INFO with PIDFD_INFO_EXIT, Linux 6.15 and later). False
// while it is alive or a zombie (read /proc then: ReadProcStat), and always
// on older kernels.
bool PidfdExitStatus(int pidfd, int* status);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_PROC_INFO_H_
