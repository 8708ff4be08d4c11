// RemoteProcess: a client process, known by a pidfd so a recycled pid is
// never mistaken for it. Its fds are reached with pidfd_getfd (transient
// copies); it remembers which of its descriptors name which kqueue.
// Credentials are not the process's but each call's: see CallerContext
// (caller_context.h) and ProcessCache (process_cache.h).
#ifndef KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_
#define KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_

#include <sys/types.h>

#include <deque>
#include <map>
#include <memory>
#include <mutex>

#include "daemon/core/local_signal.h"
#include "daemon/core/user_limits.h"
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
  // At most this many signals of closed queues are kept per process
  // (KeepClosedSignal): a process that opens and closes queues in a loop
  // holds no more of the daemon's descriptors than that.
  static constexpr size_t kMaxClosedSignals = 16;

  // The live process `tgid`, held by a new pidfd; null with *error (ESRCH)
  // if it is gone. `device` must outlive the object. The pidfd is charged
  // to `uid` (the caller's effective uid) in `limits` as one
  // Resource::kDaemonFds for as long as the object lives (knotes keep their
  // owner's): null with ENOMEM when that user's share is spent.
  static std::shared_ptr<RemoteProcess> Open(pid_t tgid, const DeviceIdentity* device,
                                             UserLimits* limits, uid_t uid, int* error);
  RemoteProcess(const RemoteProcess&) = delete;
  RemoteProcess& operator=(const RemoteProcess&) = delete;

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }

  // A transient copy of the process's descriptor `fd` (see
  // ProcessContext::DupFd). Our own device is never handed out: EOPNOTSUPP,
  // decided by the copied file's identity, not by any path.
  ScopedFd DupFd(int fd, int* error) const;
  // DupFd, with the statx its device check read (ProcessContext::DupFdStat).
  ScopedFd DupFdStat(int fd, struct statx* st, int* error) const;
  // The copy alone (pidfd_getfd, one syscall), unchecked (see
  // ProcessContext::CopyFd): for a filter that verifies at once that it is
  // the open file it registered.
  ScopedFd CopyFd(int fd, int* error) const;

  // Kqueues are known by the descriptors the process told us it used for
  // them (KQ_KEVENT_KQFD); another descriptor of the same open file is
  // recognised with kcmp. Null if `fd` is not a kqueue we know.
  std::shared_ptr<Kqueue> KqueueForFd(int fd) const EXCLUDES(mu_);

  // Records that the process's descriptor `fd` is `kq`. A new entry is only
  // made for a descriptor that really is our device, only while fewer than
  // kMaxKqueueFds are remembered (dead kqueues are forgotten first), and
  // only if `uid` (the caller's effective uid) can be charged one
  // Resource::kKqueueNames in `limits` (held until the entry goes);
  // otherwise nothing is recorded and the call carries on (nesting this
  // kqueue then fails as for any unnamed kqueue). Cheap when nothing
  // changes: one map lookup.
  void RememberKqueueFd(int fd, const std::shared_ptr<Kqueue>& kq, UserLimits* limits,
                        uid_t uid) EXCLUDES(mu_);
  // How many descriptors are remembered (tests, stats).
  size_t remembered_kqueue_fds() const EXCLUDES(mu_);

  // Whether the process's descriptor `fd` leads to our device (any kqueue).
  bool HasDeviceFd(int fd) const { return IsOurDevice(fd); }

  // Whether the process has exited (its pidfd is readable).
  bool exited() const;

  // Keeps the local signal (ABI 4; readable) of a queue this process was
  // the local owner of, now closed, so the item stays in the process's
  // epoll instance (docs/abi.md). The oldest kept one is dropped (its
  // eventfd closed, its charge given back) when a kMaxClosedSignals+1-th
  // arrives; all are dropped by DropClosedSignals, by the object's end, and
  // at once if the process has exited already.
  void KeepClosedSignal(std::unique_ptr<LocalSignal> signal) EXCLUDES(closed_mu_);
  // The process is gone: drops every kept signal. (ProcessCache calls it
  // when the pidfd says so; the RemoteProcess itself may live on a while,
  // held by a queue that named it.)
  void DropClosedSignals() EXCLUDES(closed_mu_);
  // How many are kept (tests, stats).
  size_t closed_signals() const EXCLUDES(closed_mu_);

 private:
  RemoteProcess(pid_t pid, ScopedFd pidfd, const DeviceIdentity* device,
                std::unique_ptr<UserLimits::Charge> charge)
      : pid_(pid), pidfd_(std::move(pidfd)), device_(device), charge_(std::move(charge)) {}
  // Whether the process's `fd` is (still) our device, by the identity of
  // the file it refers to.
  bool IsOurDevice(int fd) const;

  const pid_t pid_;
  const ScopedFd pidfd_;
  const DeviceIdentity* const device_;
  const std::unique_ptr<UserLimits::Charge> charge_;  // for pidfd_

  // The remembered kqueue descriptors, each with its charge. Taken under a
  // kqueue's lock (a filter resolving a kqueue ident); only DeviceIdentity's
  // lock and UserLimits' (a leaf) are taken under it. It holds weak
  // pointers only, so no kqueue dies under it.
  struct KqueueName {
    std::weak_ptr<Kqueue> kq;
    std::unique_ptr<UserLimits::Charge> charge;
  };
  mutable Mutex mu_;
  std::map<int, KqueueName> kqueue_fds_ GUARDED_BY(mu_);

  // Guards closed_signals_ (a leaf: nothing is taken under it; signals
  // leave the deque under it and are destroyed after it is released).
  mutable Mutex closed_mu_;
  std::deque<std::unique_ptr<LocalSignal>> closed_signals_ GUARDED_BY(closed_mu_);
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_
