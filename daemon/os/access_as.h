// AccessAs: asks the kernel whether another process could open a file,
// with that process's credentials, for permission checks the daemon (root)
// would otherwise pass by itself (EVFILT_VNODE through an O_PATH descriptor
// must demand what inotify demands of the caller: read permission).
#ifndef KQUEUED_DAEMON_OS_ACCESS_AS_H_
#define KQUEUED_DAEMON_OS_ACCESS_AS_H_

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace kqd {

// What the kernel checks file access with (a thread's "fs" credentials).
struct FileCredentials {
  uid_t fsuid = 0;
  gid_t fsgid = 0;
  std::vector<gid_t> groups;  // supplementary groups
  // CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH in the effective set, and the
  // process in the initial user namespace (where the files' owners live):
  // the kernel would then grant read access whatever the mode.
  bool may_bypass_read_checks = false;
};

// Reads thread (or process) `tid`'s credentials from /proc. 0 or an errno
// (ESRCH if it is gone).
int ReadFileCredentials(pid_t tid, FileCredentials* out);

// 0 if a process with `creds` may access the file behind `fd` (a descriptor
// of the daemon's, O_PATH ones included) for `mode` (R_OK, W_OK, X_OK), by
// the kernel's own rule (mode bits, ACLs, security modules); else the
// kernel's errno (EACCES). The calling thread takes `creds` for the one
// faccessat(2) call (fsuid/fsgid/groups are per thread in the kernel; the
// raw system calls are used so glibc does not apply them process-wide) and
// takes its own back; a failure to take them back aborts the daemon rather
// than let it run with a client's credentials.
int AccessAs(const FileCredentials& creds, int fd, int mode);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_ACCESS_AS_H_
