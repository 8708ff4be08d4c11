#include "daemon/service/remote_process.h"

#include <errno.h>
#include <limits.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace kqd {
namespace {

constexpr int kCapKill = 5;

int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// Reads Tgid, Uid (real, effective) and CapEff from /proc/<tid>/status.
bool ReadStatus(pid_t tid, pid_t* tgid, uid_t* ruid, uid_t* euid, uint64_t* capeff) {
  std::ifstream in("/proc/" + std::to_string(tid) + "/status");
  if (!in) return false;
  std::string line;
  bool have_tgid = false, have_uid = false;
  *capeff = 0;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    fields >> key;
    if (key == "Tgid:") {
      fields >> *tgid;
      have_tgid = true;
    } else if (key == "Uid:") {
      fields >> *ruid >> *euid;
      have_uid = true;
    } else if (key == "CapEff:") {
      std::string hex;
      fields >> hex;
      *capeff = std::strtoull(hex.c_str(), nullptr, 16);
    }
  }
  return have_tgid && have_uid;
}

}  // namespace

std::shared_ptr<RemoteProcess> RemoteProcess::ForThread(
    pid_t tid, const std::string& device_path, int* error) {
  if (tid <= 0) {
    *error = ESRCH;  // the caller is not visible in our pid namespace
    return nullptr;
  }
  pid_t tgid = 0;
  uid_t ruid = 0, euid = 0;
  uint64_t capeff = 0;
  if (!ReadStatus(tid, &tgid, &ruid, &euid, &capeff)) {
    *error = ESRCH;
    return nullptr;
  }
  std::shared_ptr<RemoteProcess> p(new RemoteProcess());
  p->pidfd_.reset(PidfdOpen(tgid));
  if (!p->pidfd_) {
    *error = ESRCH;
    return nullptr;
  }
  p->pid_ = tgid;
  p->ruid_ = ruid;
  p->euid_ = euid;
  p->cap_kill_ = (capeff >> kCapKill) & 1;
  p->device_path_ = device_path;
  return p;
}

bool RemoteProcess::exited() const {
  pollfd pfd{pidfd_.get(), POLLIN, 0};
  return poll(&pfd, 1, 0) > 0;
}

namespace {

// The target of /proc/<pid>/fd/<fd> (resolved by procfs, not by FUSE), or
// an errno.
int FdLink(pid_t pid, int fd, std::string* target) {
  char link[PATH_MAX];
  std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
  if (n < 0) return errno == ENOENT ? EBADF : errno;
  target->assign(link, static_cast<size_t>(n));
  return 0;
}

}  // namespace

bool RemoteProcess::IsOurDevice(int fd) const {
  std::string target;
  return fd >= 0 && FdLink(pid_, fd, &target) == 0 && target == device_path_;
}

void RemoteProcess::RememberKqueueFd(int fd, const std::shared_ptr<Kqueue>& kq) {
  std::lock_guard<std::mutex> l(mu_);
  auto& slot = kqueue_fds_[fd];
  if (slot.lock() == kq) return;
  slot = kq;
  // Forget kqueues that are gone, so the map stays small.
  for (auto it = kqueue_fds_.begin(); it != kqueue_fds_.end();) {
    if (it->second.expired()) it = kqueue_fds_.erase(it); else ++it;
  }
}

std::shared_ptr<Kqueue> RemoteProcess::KqueueForFd(int fd) const {
  if (!IsOurDevice(fd)) return nullptr;
  std::lock_guard<std::mutex> l(mu_);
  auto it = kqueue_fds_.find(fd);
  if (it != kqueue_fds_.end()) {
    if (auto kq = it->second.lock()) return kq;
  }
  // Another descriptor of a known kqueue (dup, dup2): same open file.
  for (const auto& [known_fd, weak] : kqueue_fds_) {
    auto kq = weak.lock();
    if (kq && IsOurDevice(known_fd) &&
        syscall(SYS_kcmp, pid_, pid_, KCMP_FILE, fd, known_fd) == 0)
      return kq;
  }
  return nullptr;
}

ScopedFd RemoteProcess::DupFd(int fd, int* error) const {
  if (fd < 0) {
    *error = EBADF;
    return ScopedFd();
  }
  // Our own device must never be copied or polled from the daemon's loop:
  // the operation would be a request to ourselves that we could not answer
  // while blocked in it.
  std::string target;
  if (int err = FdLink(pid_, fd, &target)) {
    *error = err;
    return ScopedFd();
  }
  if (target == device_path_) {
    // A kqueue the process never named with KQ_KEVENT_KQFD (KqueueForFd
    // found nothing): we cannot tell which one it is.
    *error = EOPNOTSUPP;
    return ScopedFd();
  }
  return CopyFd(fd, error);
}

ScopedFd RemoteProcess::CopyFd(int fd, int* error) const {
  if (fd < 0) {
    *error = EBADF;
    return ScopedFd();
  }
  int copy = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd_.get(), fd, 0));
  if (copy < 0) {
    *error = errno == ESRCH ? EBADF : errno;
    return ScopedFd();
  }
  return ScopedFd(copy);
}

std::shared_ptr<RemoteProcess> ProcessCache::Get(pid_t tid, int* error) {
  // Always map the thread to its process through /proc: a cached thread id
  // could have been recycled by another process.
  pid_t tgid = 0;
  uid_t ruid = 0, euid = 0;
  uint64_t capeff = 0;
  if (tid <= 0 || !ReadStatus(tid, &tgid, &ruid, &euid, &capeff)) {
    *error = ESRCH;
    return nullptr;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = cache_.find(tgid);
    if (it != cache_.end()) {
      const auto& p = it->second;
      // Same live process, same credentials: reuse (one pidfd per process).
      if (!p->exited() && p->ruid() == ruid && p->euid() == euid) return p;
    }
  }
  auto p = RemoteProcess::ForThread(tgid, device_path_, error);
  if (!p) return nullptr;
  std::lock_guard<std::mutex> l(mu_);
  cache_[tgid] = p;
  if (++lookups_ % kSweepInterval == 0) {
    for (auto it = cache_.begin(); it != cache_.end();) {
      if (it->second->exited()) it = cache_.erase(it); else ++it;
    }
  }
  return p;
}

}  // namespace kqd
