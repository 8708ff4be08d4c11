// RemoteProcess: a client process as the core's ProcessContext. Its fds are
// reached with pidfd_getfd (transient copies), its identity comes from
// /proc as seen when it first called, keyed by a pidfd so a recycled pid is
// never mistaken for it.
#ifndef KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_
#define KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/core/process_context.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

class RemoteProcess : public ProcessContext {
 public:
  // The process of thread `tid`; null with *error (ESRCH) if it is gone.
  static std::shared_ptr<RemoteProcess> ForThread(pid_t tid,
                                                  const std::string& device_path,
                                                  int* error);

  pid_t pid() const override { return pid_; }
  uid_t ruid() const override { return ruid_; }
  uid_t euid() const override { return euid_; }
  bool can_kill_any() const override { return cap_kill_; }
  ScopedFd DupFd(int fd, int* error) const override;
  // pidfd_getfd alone (one syscall).
  ScopedFd CopyFd(int fd, int* error) const override;
  // Kqueues are known by the descriptors the process told us it used for
  // them (KQ_KEVENT_KQFD); another descriptor of the same open file is
  // recognised with kcmp.
  std::shared_ptr<Kqueue> KqueueForFd(int fd) const override;
  void RememberKqueueFd(int fd, const std::shared_ptr<Kqueue>& kq);

  // Whether the process has exited (its pidfd is readable).
  bool exited() const;

 private:
  RemoteProcess() = default;
  // Whether the process's `fd` is (still) our device, by its /proc link.
  bool IsOurDevice(int fd) const;

  pid_t pid_ = 0;
  uid_t ruid_ = 0;
  uid_t euid_ = 0;
  bool cap_kill_ = false;
  ScopedFd pidfd_;
  std::string device_path_;  // our own device: its fds are never copied

  mutable std::mutex mu_;  // guards kqueue_fds_
  std::map<int, std::weak_ptr<Kqueue>> kqueue_fds_;
};

// One RemoteProcess per client process (by tgid), kept until the process
// exits: all its knotes share one pidfd, and what it told us about its
// kqueue descriptors outlives any one call. Exited processes are dropped
// when looked up and in a sweep every kSweepInterval lookups.
class ProcessCache {
 public:
  explicit ProcessCache(std::string device_path) : device_path_(std::move(device_path)) {}
  std::shared_ptr<RemoteProcess> Get(pid_t tid, int* error);

 private:
  static constexpr unsigned kSweepInterval = 256;
  const std::string device_path_;
  std::mutex mu_;  // guards cache_ and lookups_
  std::map<pid_t, std::shared_ptr<RemoteProcess>> cache_;
  unsigned lookups_ = 0;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_
