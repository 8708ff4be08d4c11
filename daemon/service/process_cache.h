// ProcessCache: who is calling — from the thread id in a request's header to
// the caller's process and the thread's current credentials, at the cost of
// one syscall per call and no /proc text.
//
// Each calling thread is known by a thread pidfd (pidfd_open with
// PIDFD_THREAD), and each process by a process pidfd (RemoteProcess). Per
// call, PIDFD_GET_INFO on the thread's pidfd returns the thread's real and
// effective uid as they are now, and fails if the thread is gone — and only
// then can its id have been given to another thread, so a cached entry
// whose pidfd still answers is the caller's. Pidfds are in the reactor's
// epoll: a thread or a process that exits is forgotten at once, so the
// daemon keeps no descriptor for clients that are gone.
//
// Kernels without PIDFD_THREAD (6.9) or PIDFD_GET_INFO (6.13) — Debian 12's
// stock kernel in the CUSE test tier, say — get the same answers the slow
// way: every call reads /proc/<tid>/status (exact, ~15 µs more per call).
//
// Bounded: at most kMaxThreads thread pidfds in all and
// kMaxThreadsPerProcess per process are kept; a thread beyond that is served
// all the same, opening its pidfd for the call (two syscalls more).
//
// Charged: every pidfd kept is one Resource::kDaemonFds of the caller's
// effective uid (the first call's): a thread's while it is cached (past the
// user's share it is served uncached, as above), a process's while its
// RemoteProcess lives (past the share its calls fail with ENOMEM).
#ifndef KQUEUED_DAEMON_SERVICE_PROCESS_CACHE_H_
#define KQUEUED_DAEMON_SERVICE_PROCESS_CACHE_H_

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "daemon/core/reactor.h"
#include "daemon/service/caller_context.h"
#include "daemon/service/device_identity.h"
#include "daemon/service/remote_process.h"
#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

class ProcessCache {
 public:
  static constexpr size_t kMaxThreads = 4096;
  static constexpr size_t kMaxThreadsPerProcess = 64;

  // `reactor` tells of exits; it must outlive the cache. `device_path`: our
  // device (see DeviceIdentity). `limits`: where pidfds are charged.
  ProcessCache(Reactor* reactor, std::string device_path, UserLimits* limits);
  ~ProcessCache();
  ProcessCache(const ProcessCache&) = delete;
  ProcessCache& operator=(const ProcessCache&) = delete;

  // The caller of a request made by thread `tid` (0: not in our pid
  // namespace), with that thread's credentials now; null with *error
  // (ESRCH) if the thread is gone or invisible to us.
  std::shared_ptr<CallerContext> Get(pid_t tid, int* error) EXCLUDES(state_->mu);

  // What is cached (tests, stats).
  size_t threads() const EXCLUDES(state_->mu);
  size_t processes() const EXCLUDES(state_->mu);

 private:
  struct Thread {
    std::unique_ptr<UserLimits::Charge> charge;  // for pidfd
    ScopedFd pidfd;
    std::shared_ptr<RemoteProcess> process;
    int64_t watch = 0;  // reactor token
  };
  struct Process {
    std::shared_ptr<RemoteProcess> process;
    int64_t watch = 0;
    size_t threads = 0;  // cached Thread entries of it
  };
  // Owned by the cache and reached by the reactor's callbacks through weak
  // pointers (a callback may run once more after its removal).
  struct State {
    // The two maps. Taken by serving threads (no kqueue lock held) and by
    // the reactor's callbacks; the reactor's lock (AddFd/RemoveFd) is taken
    // under it, nothing else.
    mutable Mutex mu;
    std::unordered_map<pid_t, std::shared_ptr<Thread>> threads GUARDED_BY(mu);
    std::unordered_map<pid_t, Process> processes GUARDED_BY(mu);  // by tgid
  };

  std::shared_ptr<CallerContext> Slow(pid_t tid, int* error) EXCLUDES(state_->mu);
  // Without the kernel's help: /proc/<tid>/status, nothing cached.
  std::shared_ptr<CallerContext> FromProcStatus(pid_t tid, int* error);
  std::shared_ptr<RemoteProcess> ProcessFor(pid_t tgid, uid_t euid, int* error)
      EXCLUDES(state_->mu);
  void ForgetThread(pid_t tid, const std::shared_ptr<Thread>& t) EXCLUDES(state_->mu);
  static void ForgetThreadLocked(State* s, Reactor* reactor, pid_t tid,
                                 const std::shared_ptr<Thread>& t) REQUIRES(s->mu);

  Reactor* const reactor_;
  const DeviceIdentity device_;
  UserLimits* const limits_;
  // Set once a call found the kernel without thread pidfds or GET_INFO.
  std::atomic<bool> old_kernel_{false};
  const std::shared_ptr<State> state_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_PROCESS_CACHE_H_
