#include "daemon/service/remote_process.h"

#include <errno.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon/os/pidfd.h"

namespace kqd {

std::shared_ptr<RemoteProcess> RemoteProcess::Open(pid_t tgid, const DeviceIdentity* device,
                                                   UserLimits* limits, uid_t uid, int* error) {
  if (tgid <= 0) {
    *error = ESRCH;
    return nullptr;
  }
  std::unique_ptr<UserLimits::Charge> charge = limits->Take(uid, Resource::kDaemonFds);
  if (!charge) {
    *error = ENOMEM;
    return nullptr;
  }
  ScopedFd pidfd = OpenPidfd(tgid);
  if (!pidfd) {
    // Out of descriptors is the daemon's trouble, not a vanished caller:
    // ENFILE (the daemon's table is the "system" table here), as for every
    // other descriptor the daemon fails to get (docs/security.md).
    *error = (errno == EMFILE || errno == ENFILE) ? ENFILE : ESRCH;
    return nullptr;
  }
  return std::shared_ptr<RemoteProcess>(
      new RemoteProcess(tgid, std::move(pidfd), device, std::move(charge)));
}

bool RemoteProcess::exited() const { return PidfdExited(pidfd_.get()); }

void RemoteProcess::KeepClosedSignal(std::unique_ptr<LocalSignal> signal) {
  std::unique_ptr<LocalSignal> oldest;  // closed after the unlock
  {
    MutexLock l(closed_mu_);
    closed_signals_.push_back(std::move(signal));
    if (closed_signals_.size() > kMaxClosedSignals) {
      oldest = std::move(closed_signals_.front());
      closed_signals_.pop_front();
    }
  }
  // Looked at after the insertion: an exit the cache saw before it is
  // not missed.
  if (exited()) DropClosedSignals();
}

void RemoteProcess::DropClosedSignals() {
  std::deque<std::unique_ptr<LocalSignal>> dropped;
  MutexLock l(closed_mu_);
  dropped.swap(closed_signals_);
}

size_t RemoteProcess::closed_signals() const {
  MutexLock l(closed_mu_);
  return closed_signals_.size();
}

bool RemoteProcess::IsOurDevice(int fd) const { return device_->IsDeviceOf(pid_, fd); }

void RemoteProcess::RememberKqueueFd(int fd, const std::shared_ptr<Kqueue>& kq,
                                     UserLimits* limits, uid_t uid) {
  {
    MutexLock l(mu_);
    auto it = kqueue_fds_.find(fd);
    if (it != kqueue_fds_.end() && it->second.kq.lock() == kq) return;  // the usual case
  }
  // A new claim: believe it only for a descriptor that is our device. (Which
  // kqueue it is cannot be checked here, but a wrong claim only misleads the
  // claimant's own nesting.)
  if (!IsOurDevice(fd)) return;
  std::unique_ptr<UserLimits::Charge> charge;  // given back unused if not needed
  MutexLock l(mu_);
  auto it = kqueue_fds_.find(fd);
  if (it != kqueue_fds_.end()) {
    it->second.kq = kq;  // the number names another kqueue now; same charge
    return;
  }
  if (kqueue_fds_.size() >= kMaxKqueueFds) {
    // Full: forget kqueues that are gone, then give up if that freed nothing.
    for (auto e = kqueue_fds_.begin(); e != kqueue_fds_.end();) {
      if (e->second.kq.expired()) e = kqueue_fds_.erase(e); else ++e;
    }
    if (kqueue_fds_.size() >= kMaxKqueueFds) return;
  }
  charge = limits->Take(uid, Resource::kKqueueNames);
  if (!charge) {
    // The user's share is spent (by all its processes): make room from
    // this process's dead entries first, as above.
    for (auto e = kqueue_fds_.begin(); e != kqueue_fds_.end();) {
      if (e->second.kq.expired()) e = kqueue_fds_.erase(e); else ++e;
    }
    charge = limits->Take(uid, Resource::kKqueueNames);
    if (!charge) return;
  }
  kqueue_fds_.emplace(fd, KqueueName{kq, std::move(charge)});
}

size_t RemoteProcess::remembered_kqueue_fds() const {
  MutexLock l(mu_);
  return kqueue_fds_.size();
}

std::shared_ptr<Kqueue> RemoteProcess::KqueueForFd(int fd) const {
  if (!IsOurDevice(fd)) return nullptr;
  MutexLock l(mu_);
  auto it = kqueue_fds_.find(fd);
  if (it != kqueue_fds_.end()) {
    if (auto kq = it->second.kq.lock()) return kq;
  }
  // Another descriptor of a known kqueue (dup, dup2): same open file.
  // (No strong reference is taken to a kqueue that does not match: the
  // last one dropped here would run ~Kqueue under mu_.)
  for (const auto& [known_fd, name] : kqueue_fds_) {
    if (name.kq.expired() || syscall(SYS_kcmp, pid_, pid_, KCMP_FILE, fd, known_fd) != 0)
      continue;
    if (auto kq = name.kq.lock()) return kq;
  }
  return nullptr;
}

ScopedFd RemoteProcess::CopyFd(int fd, int* error) const {
  if (fd < 0) {
    *error = EBADF;
    return ScopedFd();
  }
  ScopedFd copy(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd_.get(), fd, 0)));
  if (!copy) *error = errno == ESRCH ? EBADF : errno;
  return copy;
}

ScopedFd RemoteProcess::DupFdStat(int fd, struct statx* st, int* error) const {
  ScopedFd copy = CopyFd(fd, error);
  if (!copy) return ScopedFd();
  // One statx serves both the device check (as DupFd's) and the caller.
  if (!DeviceIdentity::StatCopy(copy.get(), st)) {
    *error = errno;
    return ScopedFd();
  }
  if (device_->IsDeviceStat(*st)) {
    *error = EOPNOTSUPP;  // as DupFd
    return ScopedFd();
  }
  return copy;
}

ScopedFd RemoteProcess::DupFd(int fd, int* error) const {
  ScopedFd copy = CopyFd(fd, error);
  if (!copy) return ScopedFd();
  // Our own device must never be polled or read from the daemon's loop: the
  // operation would be a request to ourselves that we could not answer while
  // blocked in it. Holding (and closing) the copy is harmless: the device is
  // opened without flush, and a last close only queues a RELEASE. The check
  // is on the copy itself, so the descriptor cannot change in between.
  if (device_->IsDevice(copy.get())) {
    // A kqueue the process never named with KQ_KEVENT_KQFD (KqueueForFd
    // found nothing): we cannot tell which one it is.
    *error = EOPNOTSUPP;
    return ScopedFd();
  }
  return copy;
}

}  // namespace kqd
