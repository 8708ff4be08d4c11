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
  std::shared_ptr<Kqueue> KqueueForFd(int fd) const override { return nullptr; }

  // Whether the process has exited (its pidfd is readable).
  bool exited() const;

 private:
  RemoteProcess() = default;

  pid_t pid_ = 0;
  uid_t ruid_ = 0;
  uid_t euid_ = 0;
  bool cap_kill_ = false;
  ScopedFd pidfd_;
  std::string device_path_;  // our own device: its fds are never copied
};

// Caches RemoteProcess objects by tgid so all knotes of one process share
// one pidfd.
class ProcessCache {
 public:
  explicit ProcessCache(std::string device_path) : device_path_(std::move(device_path)) {}
  std::shared_ptr<RemoteProcess> Get(pid_t tid, int* error);

 private:
  const std::string device_path_;
  std::mutex mu_;  // guards cache_
  std::map<pid_t, std::weak_ptr<RemoteProcess>> cache_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_REMOTE_PROCESS_H_
