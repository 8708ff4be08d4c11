#include "daemon/service/remote_process.h"

#include <errno.h>
#include <limits.h>
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

ScopedFd RemoteProcess::DupFd(int fd, int* error) const {
  if (fd < 0) {
    *error = EBADF;
    return ScopedFd();
  }
  // Our own device must never be copied or polled from the daemon's loop:
  // the operation would be a request to ourselves that we could not answer
  // while blocked in it. The link is resolved by procfs, not by FUSE.
  char link[PATH_MAX];
  std::string path = "/proc/" + std::to_string(pid_) + "/fd/" + std::to_string(fd);
  ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
  if (n < 0) {
    *error = errno == ENOENT ? EBADF : errno;
    return ScopedFd();
  }
  link[n] = '\0';
  if (device_path_ == link) {
    *error = EOPNOTSUPP;  // nesting kqueues across the daemon: see docs
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
      auto p = it->second.lock();
      // Same live process, same credentials: reuse (one pidfd per process).
      if (p && !p->exited() && p->ruid() == ruid && p->euid() == euid) return p;
    }
  }
  auto p = RemoteProcess::ForThread(tgid, device_path_, error);
  if (!p) return nullptr;
  std::lock_guard<std::mutex> l(mu_);
  cache_[tgid] = p;
  for (auto it = cache_.begin(); it != cache_.end();) {
    if (it->second.expired()) it = cache_.erase(it); else ++it;
  }
  return p;
}

}  // namespace kqd
