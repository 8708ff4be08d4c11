#include "daemon/service/process_cache.h"

#include <errno.h>
#include <sys/epoll.h>

#include "daemon/os/pidfd.h"
#include "daemon/os/proc_files.h"

namespace kqd {

ProcessCache::ProcessCache(Reactor* reactor, std::string device_path, UserLimits* limits)
    : reactor_(reactor),
      device_(std::move(device_path)),
      limits_(limits),
      state_(std::make_shared<State>()) {}

ProcessCache::~ProcessCache() {
  MutexLock l(state_->mu);
  for (auto& [tid, t] : state_->threads) reactor_->RemoveFd(t->pidfd.get(), t->watch);
  for (auto& [pid, p] : state_->processes) reactor_->RemoveFd(p.process->pidfd(), p.watch);
  state_->threads.clear();
  state_->processes.clear();
}

size_t ProcessCache::threads() const {
  MutexLock l(state_->mu);
  return state_->threads.size();
}

size_t ProcessCache::processes() const {
  MutexLock l(state_->mu);
  return state_->processes.size();
}

std::shared_ptr<CallerContext> ProcessCache::Get(pid_t tid, int* error) {
  if (tid <= 0) {
    *error = ESRCH;  // the caller is not visible in our pid namespace
    return nullptr;
  }
  std::shared_ptr<Thread> t;
  {
    MutexLock l(state_->mu);
    auto it = state_->threads.find(tid);
    if (it != state_->threads.end()) t = it->second;
  }
  if (t) {
    // The entry holds the pidfd open while we use it, even if the reactor
    // forgets the thread meanwhile.
    PidfdTaskInfo info;
    if (ReadPidfdInfo(t->pidfd.get(), &info) && info.tgid == t->process->pid()) {
      return std::make_shared<CallerContext>(t->process, tid, info.ruid, info.euid);
    }
    // Gone: the id belongs to a new thread now (or to nobody).
    ForgetThread(tid, t);
  }
  return Slow(tid, error);
}

std::shared_ptr<CallerContext> ProcessCache::Slow(pid_t tid, int* error) {
  if (old_kernel_.load(std::memory_order_relaxed)) return FromProcStatus(tid, error);
  // The thread is blocked in its request, so this id is still it.
  ScopedFd pidfd = OpenThreadPidfd(tid);
  PidfdTaskInfo info;
  bool known = pidfd && ReadPidfdInfo(pidfd.get(), &info);
  if (!known && errno != ESRCH) {
    // EINVAL from pidfd_open (no PIDFD_THREAD), ENOTTY/EINVAL/EOPNOTSUPP from
    // the ioctl (no PIDFD_GET_INFO): an older kernel. Anything else (EMFILE)
    // is served the slow way this once.
    if (errno == EINVAL || errno == ENOTTY || errno == EOPNOTSUPP)
      old_kernel_.store(true, std::memory_order_relaxed);
    return FromProcStatus(tid, error);
  }
  if (!known || info.pid != tid) {
    *error = ESRCH;
    return nullptr;
  }
  const pid_t tgid = info.tgid;
  std::shared_ptr<RemoteProcess> process = ProcessFor(tgid, info.euid, error);
  if (!process) return nullptr;
  auto caller = std::make_shared<CallerContext>(process, tid, info.ruid, info.euid);
  // Kept only if the user's descriptor share allows it.
  std::unique_ptr<UserLimits::Charge> charge = limits_->Take(info.euid, Resource::kDaemonFds);
  if (!charge) return caller;

  MutexLock l(state_->mu);
  auto pit = state_->processes.find(tgid);
  if (pit == state_->processes.end() || pit->second.process != process ||
      state_->threads.size() >= kMaxThreads ||
      pit->second.threads >= kMaxThreadsPerProcess || state_->threads.count(tid) != 0) {
    return caller;  // served without caching the thread
  }
  auto t = std::make_shared<Thread>();
  t->charge = std::move(charge);
  t->pidfd = std::move(pidfd);
  t->process = process;
  std::weak_ptr<State> weak_state = state_;
  std::weak_ptr<Thread> weak_thread = t;
  Reactor* reactor = reactor_;
  // A thread pidfd is readable once the thread has exited.
  t->watch = reactor_->AddFd(t->pidfd.get(), EPOLLIN, [weak_state, weak_thread, reactor,
                                                      tid](uint32_t) {
    auto s = weak_state.lock();
    auto th = weak_thread.lock();
    if (!s || !th) return;
    MutexLock l(s->mu);
    ForgetThreadLocked(s.get(), reactor, tid, th);
  });
  if (t->watch <= 0) return caller;  // cannot watch it: do not keep it
  ++pit->second.threads;
  state_->threads.emplace(tid, std::move(t));
  return caller;
}

std::shared_ptr<CallerContext> ProcessCache::FromProcStatus(pid_t tid, int* error) {
  ProcStatus status;
  if (!ReadProcStatus(tid, &status)) {
    *error = ESRCH;
    return nullptr;
  }
  std::shared_ptr<RemoteProcess> process = ProcessFor(status.tgid, status.euid, error);
  if (!process) return nullptr;
  return std::make_shared<CallerContext>(process, tid, status.ruid, status.euid);
}

std::shared_ptr<RemoteProcess> ProcessCache::ProcessFor(pid_t tgid, uid_t euid, int* error) {
  {
    MutexLock l(state_->mu);
    auto it = state_->processes.find(tgid);
    // The reactor forgets exited processes; exited() closes the window
    // before it has.
    if (it != state_->processes.end() && !it->second.process->exited()) return it->second.process;
  }
  std::shared_ptr<RemoteProcess> process = RemoteProcess::Open(tgid, &device_, limits_, euid, error);
  if (!process) return nullptr;
  MutexLock l(state_->mu);
  auto it = state_->processes.find(tgid);
  if (it != state_->processes.end()) {
    if (!it->second.process->exited()) return it->second.process;  // lost a race: use theirs
    it->second.process->DropClosedSignals();  // a leaf lock
    reactor_->RemoveFd(it->second.process->pidfd(), it->second.watch);
    state_->processes.erase(it);
  }
  std::weak_ptr<State> weak_state = state_;
  std::weak_ptr<RemoteProcess> weak_process = process;
  Reactor* reactor = reactor_;
  Process entry;
  entry.process = process;
  entry.watch = reactor_->AddFd(process->pidfd(), EPOLLIN, [weak_state, weak_process, reactor,
                                                            tgid](uint32_t) {
    auto s = weak_state.lock();
    auto p = weak_process.lock();
    if (!s || !p) return;
    // The process is gone: the signals of its closed queues go now, not
    // when the last queue that named it lets the object go.
    p->DropClosedSignals();
    MutexLock l(s->mu);
    auto it = s->processes.find(tgid);
    if (it == s->processes.end() || it->second.process != p) return;
    reactor->RemoveFd(p->pidfd(), it->second.watch);
    s->processes.erase(it);
  });
  // Unwatchable (out of fds in epoll?): serve the call, cache nothing.
  if (entry.watch <= 0) return process;
  state_->processes.emplace(tgid, std::move(entry));
  return process;
}

void ProcessCache::ForgetThread(pid_t tid, const std::shared_ptr<Thread>& t) {
  MutexLock l(state_->mu);
  ForgetThreadLocked(state_.get(), reactor_, tid, t);
}

void ProcessCache::ForgetThreadLocked(State* s, Reactor* reactor, pid_t tid,
                                      const std::shared_ptr<Thread>& t) {
  auto it = s->threads.find(tid);
  if (it == s->threads.end() || it->second != t) return;  // forgotten already
  reactor->RemoveFd(t->pidfd.get(), t->watch);
  auto pit = s->processes.find(t->process->pid());
  if (pit != s->processes.end() && pit->second.process == t->process && pit->second.threads > 0)
    --pit->second.threads;
  s->threads.erase(it);
}

}  // namespace kqd
