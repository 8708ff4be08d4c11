#include "daemon/os/pidfd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace kqd {
namespace {

// The kernel's struct pidfd_info and PIDFD_GET_INFO, declared here: the C
// library's headers on the build machines predate them. The kernel accepts
// any size from 64 bytes up (the size is part of the command).
struct PidfdInfo {
  uint64_t mask;
  uint64_t cgroupid;
  uint32_t pid;
  uint32_t tgid;
  uint32_t ppid;
  uint32_t ruid;
  uint32_t rgid;
  uint32_t euid;
  uint32_t egid;
  uint32_t suid;
  uint32_t sgid;
  uint32_t fsuid;
  uint32_t fsgid;
  int32_t exit_code;
  uint32_t coredump_mask;
  uint32_t spare;
};
static_assert(sizeof(PidfdInfo) == 72, "struct pidfd_info as of Linux 6.16");
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, PidfdInfo);
constexpr uint64_t kPidfdInfoPid = 1u << 0;
constexpr uint64_t kPidfdInfoCreds = 1u << 1;
constexpr uint64_t kPidfdInfoExit = 1u << 3;  // Linux 6.15
constexpr unsigned kPidfdThread = O_EXCL;  // PIDFD_THREAD

}  // namespace

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

ScopedFd OpenThreadPidfd(pid_t tid) {
  return ScopedFd(static_cast<int>(syscall(SYS_pidfd_open, tid, kPidfdThread)));
}

bool ReadPidfdInfo(int pidfd, PidfdTaskInfo* out) {
  PidfdInfo info{};
  info.mask = kPidfdInfoPid | kPidfdInfoCreds;
  if (ioctl(pidfd, kPidfdGetInfo, &info) != 0) return false;
  const uint64_t want = kPidfdInfoPid | kPidfdInfoCreds;
  if ((info.mask & want) != want) {
    errno = EOPNOTSUPP;
    return false;
  }
  out->pid = static_cast<pid_t>(info.pid);
  out->tgid = static_cast<pid_t>(info.tgid);
  out->ruid = info.ruid;
  out->euid = info.euid;
  out->suid = info.suid;
  return true;
}

bool HasCapKill(pid_t id) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = id;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  return (data[CAP_TO_INDEX(CAP_KILL)].effective & CAP_TO_MASK(CAP_KILL)) != 0;
}

bool PidfdExitStatus(int pidfd, int* status) {
  PidfdInfo info{};
  info.mask = kPidfdInfoExit;
  if (ioctl(pidfd, kPidfdGetInfo, &info) != 0) return false;  // ENOTTY: before 6.13
  if (!(info.mask & kPidfdInfoExit)) return false;  // not reaped yet, or before 6.15
  *status = info.exit_code;
  return true;
}

}  // namespace kqd
