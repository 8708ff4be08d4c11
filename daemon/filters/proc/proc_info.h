// proc_info: what EVFILT_PROC reads about a process from /proc and pidfds.
// Small, allocation-light readers: they run under the proc tracker's lock
// and on the event loop.
#ifndef KQUEUED_DAEMON_FILTERS_PROC_PROC_INFO_H_
#define KQUEUED_DAEMON_FILTERS_PROC_PROC_INFO_H_

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "daemon/core/process_context.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

// /proc/<pid>/status: the thread-group id and the Uid: and Gid: lines
// (real, effective, saved set-ID; the fs ids are not needed).
struct ProcCreds {
  pid_t tgid = 0;
  uid_t ruid = 0;
  uid_t euid = 0;
  uid_t suid = 0;
  gid_t rgid = 0;
  gid_t egid = 0;
  gid_t sgid = 0;
};
bool ReadProcCreds(pid_t pid, ProcCreds* out);

// Whether the process is "set-id" — Linux's nearest to NetBSD's PK_SUGID:
// its effective or saved user or group id differs from the real one (it ran
// a set-id program, or changed ids without dropping them all).
bool IsSetId(const ProcCreds& creds);

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

// kill(2)'s permission rule, which the project applies to an EVFILT_PROC
// registration: the watcher's real or effective uid equals the target's
// real or saved set-user-ID, or the watcher has CAP_KILL. (NetBSD applies
// KAUTH_PROCESS_KEVENT_FILTER instead — see MayTrack — which also refuses
// a set-id target of the same user; docs/filters.md lists the difference.)
bool MaySignal(const ProcessContext& watcher, const ProcCreds& target);

// NetBSD's KAUTH_PROCESS_KEVENT_FILTER, which authorises the knote NOTE_TRACK
// attaches to a new child with the FORKING process's credentials
// (`forker`): allowed if the forker is root (effective uid 0), or if its
// real uid is the child's and the child is not set-id.
bool MayTrack(const ProcCreds& forker, const ProcCreds& child);

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

#endif  // KQUEUED_DAEMON_FILTERS_PROC_PROC_INFO_H_
