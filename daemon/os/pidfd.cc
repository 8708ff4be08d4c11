#include "daemon/os/pidfd.h"

#include <errno.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

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

namespace {

// PIDFD_GET_INFO (Linux 6.13; the exit status since 6.15), declared here
// because the build's kernel headers may predate it. Only the first version
// of the structure (64 bytes) is used: the kernel takes the size from the
// command and fills what fits.
struct PidfdInfoV0 {
  uint64_t mask;
  uint64_t cgroupid;
  uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
  int32_t exit_code;
};
static_assert(sizeof(PidfdInfoV0) == 64, "PIDFD_INFO_SIZE_VER0");
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, PidfdInfoV0);
constexpr uint64_t kPidfdInfoExit = 1u << 3;

}  // namespace

bool PidfdExitStatus(int pidfd, int* status) {
  PidfdInfoV0 info{};
  info.mask = kPidfdInfoExit;
  if (ioctl(pidfd, kPidfdGetInfo, &info) != 0) return false;  // ENOTTY: before 6.13
  if (!(info.mask & kPidfdInfoExit)) return false;  // not reaped yet, or before 6.15
  *status = info.exit_code;
  return true;
}

}  // namespace kqd
