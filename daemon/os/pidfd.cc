#include "daemon/os/pidfd.h"

#include <errno.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace kqd {

ScopedFd OpenPidfd(pid_t pid) {
  // pidfds are always close-on-exec; flags 0 asks for a process (not a
  // thread) pidfd, so a non-leader thread id is refused with EINVAL.
  return ScopedFd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
}

bool PidfdHoldsPid(int pidfd) {
  if (syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0) return true;
  // EPERM: it exists, we just may not signal it (a daemon without root).
  return errno == EPERM;
}

bool PidfdExited(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

}  // namespace kqd
