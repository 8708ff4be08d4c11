// pidfds: a process named by its kernel object rather than by its reusable
// number.
#ifndef KQUEUED_DAEMON_OS_PIDFD_H_
#define KQUEUED_DAEMON_OS_PIDFD_H_

#include <sys/types.h>

#include "daemon/util/scoped_fd.h"

namespace kqd {

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

// pidfd_open(tid, PIDFD_THREAD) (Linux 6.9): one thread, whether or not it
// leads its group. Readable once that thread has exited. Invalid with errno
// set on failure (ESRCH: no such thread; EINVAL: a kernel without
// PIDFD_THREAD).
ScopedFd OpenThreadPidfd(pid_t tid);

// What PIDFD_GET_INFO (Linux 6.13) tells of the task behind a pidfd — for a
// thread pidfd, that thread's own credentials, as they are now.
struct PidfdTaskInfo {
  pid_t pid = 0;   // the task (thread) id
  pid_t tgid = 0;  // its process
  uid_t ruid = 0;
  uid_t euid = 0;
  uid_t suid = 0;
};
// Fills *out; false with errno ESRCH once the task has exited, ENOTTY (or
// EINVAL, EOPNOTSUPP) on a kernel without PIDFD_GET_INFO.
bool ReadPidfdInfo(int pidfd, PidfdTaskInfo* out);

// Whether thread or process `id` has CAP_KILL in its effective set
// (capget(2)); false if that cannot be read.
bool HasCapKill(pid_t id);

// The wait(2)-style status of the process behind `pidfd` once it has been
// reaped (PIDFD_GET_INFO with PIDFD_INFO_EXIT, Linux 6.15 and later). False
// while it is alive or a zombie (read /proc then: ReadProcStat), and always
// on older kernels.
bool PidfdExitStatus(int pidfd, int* status);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_PIDFD_H_
