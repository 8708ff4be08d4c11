#include "daemon/service/caller_context.h"

#include <errno.h>
#include <unistd.h>

#include "daemon/os/access_as.h"
#include "daemon/os/pidfd.h"

namespace kqd {

bool CallerContext::SameProcess(const ProcessContext& other) const {
  const auto* o = dynamic_cast<const CallerContext*>(&other);
  if (o == nullptr) return false;
  if (o->process_ == process_) return true;
  return o->pid() == pid() && !process_->exited();
}

int CallerContext::CheckReadAccess(int file) const {
  const bool in_call = in_call_.load(std::memory_order_acquire);
  FileCredentials creds;
  if (int err = ReadFileCredentials(in_call ? tid_ : process_->pid(), &creds)) return err;
  // The thread (or process) we read is still the caller's.
  if (in_call ? !in_call_.load(std::memory_order_acquire) : !PidfdHoldsPid(process_->pidfd()))
    return ESRCH;
  return AccessAs(creds, file, R_OK);
}

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
  return cap && PidfdHoldsPid(process_->pidfd());
}

}  // namespace kqd
