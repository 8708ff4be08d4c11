#include "daemon/service/caller_context.h"

#include <errno.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace kqd {
namespace {

// Whether CAP_KILL is in the effective set of thread (or process) `id`.
// False if it cannot be read.
bool HasCapKill(pid_t id) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = id;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  return (data[CAP_TO_INDEX(CAP_KILL)].effective & CAP_TO_MASK(CAP_KILL)) != 0;
}

// Whether `pidfd` still holds its process (signal 0: existence only).
bool StillThere(int pidfd) {
  if (syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0) return true;
  return errno == EPERM;
}

}  // namespace

bool CallerContext::can_kill_any() const {
  int known = cap_kill_.load(std::memory_order_acquire);
  if (known >= 0) return known == 1;
  if (in_call_.load(std::memory_order_acquire)) {
    // The thread is blocked in our call: tid_ is still it, and its
    // credentials cannot change until we answer.
    bool cap = HasCapKill(tid_);
    if (in_call_.load(std::memory_order_acquire)) {
      cap_kill_.store(cap ? 1 : 0, std::memory_order_release);
      return cap;
    }
  }
  // After the call: the process as it is now, read by pid and confirmed by
  // its pidfd afterwards (so the pid was not reused in between). Not
  // memoised: it may change.
  bool cap = HasCapKill(process_->pid());
  return cap && StillThere(process_->pidfd());
}

}  // namespace kqd
