// RemoteProcess: a client process, known by a pidfd so a recycled pid is
// never mistaken for it. Its fds are reached with pidfd_getfd (transient
// copies); it remembers which of its descriptors name which kqueue.
// Credentials are not the process's but each call's: see CallerContext
// (caller_context.h) and ProcessCache (process_cache.h).
#ifndef KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_
#define KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>

#include "daemon/service/device_identity.h"
#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

class Kqueue;

class RemoteProcess {
 public:
  // At most this many descriptors are remembered per process as naming a
  // kqueue (KQ_KEVENT_KQFD): a client cannot grow the map, nor the cost of
  // a lookup in it, without bound.
  static constexpr size_t kMaxKqueueFds = 256;

  // The live process `tgid`, held by a new pidfd; null with *error (ESRCH)
  // if it is gone. `device` must outlive the object.
  static std::shared_ptr<RemoteProcess> Open(pid_t tgid, const DeviceIdentity* device,
                                             int* error);
  RemoteProcess(const RemoteProcess&) = delete;
  RemoteProcess& operator=(const RemoteProcess&) = delete;

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }

  // A transient copy of the process's descriptor `fd` (see
  // ProcessContext::DupFd). Our own device is never handed out: EOPNOTSUPP,
  // decided by the copied file's identity, not by any path.
  ScopedFd DupFd(int fd, int* error) const;
  // The copy alone (pidfd_getfd, one syscall), unchecked (see
  // ProcessContext::CopyFd): for a filter that verifies at once that it is
  // the open file it registered.
  ScopedFd CopyFd(int fd, int* error) const;

  // Kqueues are known by the descriptors the process told us it used for
  // them (KQ_KEVENT_KQFD); another descriptor of the same open file is
  // recognised with kcmp. Null if `fd` is not a kqueue we know.
  std::shared_ptr<Kqueue> KqueueForFd(int fd) const EXCLUDES(mu_);

  // Records that the process's descriptor `fd` is `kq`. A new entry is only
  // made for a descriptor that really is our device, and only while fewer
  // than kMaxKqueueFds are remembered (dead kqueues are forgotten first);
  // otherwise nothing is recorded and the call carries on (nesting this
  // kqueue then fails as for any unnamed kqueue). Cheap when nothing
  // changes: one map lookup.
  void RememberKqueueFd(int fd, const std::shared_ptr<Kqueue>& kq) EXCLUDES(mu_);
  // How many descriptors are remembered (tests, stats).
  size_t remembered_kqueue_fds() const EXCLUDES(mu_);

  // Whether the process's descriptor `fd` leads to our device (any kqueue).
  bool HasDeviceFd(int fd) const { return IsOurDevice(fd); }

  // Whether the process has exited (its pidfd is readable).
  bool exited() const;

 private:
  RemoteProcess(pid_t pid, ScopedFd pidfd, const DeviceIdentity* device)
      : pid_(pid), pidfd_(std::move(pidfd)), device_(device) {}
  // Whether the process's `fd` is (still) our device, by the identity of
  // the file it refers to.
  bool IsOurDevice(int fd) const;

  const pid_t pid_;
  const ScopedFd pidfd_;
  const DeviceIdentity* const device_;

  // The remembered kqueue descriptors. Taken under a kqueue's lock (a
  // filter resolving a kqueue ident); only DeviceIdentity's lock is taken
  // under it. It holds weak pointers only, so no kqueue dies under it.
  mutable Mutex mu_;
  std::map<int, std::weak_ptr<Kqueue>> kqueue_fds_ GUARDED_BY(mu_);
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_
