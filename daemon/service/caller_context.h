// CallerContext: the process a kevent call comes from, with the calling
// thread's credentials as they were at the call — the core's ProcessContext
// for the call and for the knotes it registers. Descriptor access goes to the
// shared RemoteProcess.
//
// Credentials are exact per call: ruid/euid come from the kernel for the
// calling thread when the call arrives (ProcessCache), and CAP_KILL is asked
// of the kernel only if a change needs it (EVFILT_PROC on another user's
// process), with capget(2) on the calling thread while the call runs. So a
// setuid() or a capset() between two calls governs the second one.
#ifndef KQUEUED_DAEMON_SERVICE_CALLER_CONTEXT_H_
#define KQUEUED_DAEMON_SERVICE_CALLER_CONTEXT_H_

#include <sys/types.h>

#include <atomic>
#include <memory>

#include "daemon/core/process_context.h"
#include "daemon/service/remote_process.h"

namespace kqd {

class CallerContext : public ProcessContext {
 public:
  // `tid`: the calling thread, blocked in the call until EndCall().
  CallerContext(std::shared_ptr<RemoteProcess> process, pid_t tid, uid_t ruid, uid_t euid)
      : process_(std::move(process)), tid_(tid), ruid_(ruid), euid_(euid) {}
  CallerContext(const CallerContext&) = delete;
  CallerContext& operator=(const CallerContext&) = delete;

  pid_t pid() const override { return process_->pid(); }
  // The same RemoteProcess (the cache's one per live process), or, for a
  // context of another RemoteProcess object (served uncached), the same pid
  // while this one's process has not exited: a pid taken over after the
  // exit never passes.
  bool SameProcess(const ProcessContext& other) const override;
  uid_t ruid() const override { return ruid_; }
  uid_t euid() const override { return euid_; }
  // CAP_KILL in the calling thread's effective set, read once per call when
  // first asked. Asked after EndCall() (a filter acting later for a knote's
  // owner) without having been asked during the call: the process's
  // capability now, if it still lives, else false.
  bool can_kill_any() const override;
  ScopedFd DupFd(int fd, int* error) const override { return process_->DupFd(fd, error); }
  ScopedFd DupFdStat(int fd, struct statx* st, int* error) const override {
    return process_->DupFdStat(fd, st, error);
  }
  ScopedFd CopyFd(int fd, int* error) const override { return process_->CopyFd(fd, error); }
  std::shared_ptr<Kqueue> KqueueForFd(int fd) const override {
    return process_->KqueueForFd(fd);
  }
  // With the calling thread's fs uid, fs gid and groups while the call
  // runs (afterwards: the process's, confirmed by its pidfd), read afresh.
  int CheckReadAccess(int file) const override;
  // Kept by the RemoteProcess until the process exits (at most
  // RemoteProcess::kMaxClosedSignals).
  void KeepClosedQueueSignal(std::unique_ptr<LocalSignal> signal) const override {
    process_->KeepClosedSignal(std::move(signal));
  }

  const std::shared_ptr<RemoteProcess>& process() const { return process_; }
  pid_t tid() const { return tid_; }
  // The call has been answered: tid_ may now name another thread.
  void EndCall() { in_call_.store(false, std::memory_order_release); }

 private:
  const std::shared_ptr<RemoteProcess> process_;
  const pid_t tid_;
  const uid_t ruid_;
  const uid_t euid_;
  std::atomic<bool> in_call_{true};
  // -1: not asked yet; else 0 or 1.
  mutable std::atomic<int> cap_kill_{-1};
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_CALLER_CONTEXT_H_
