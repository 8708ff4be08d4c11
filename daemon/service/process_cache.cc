#include "daemon/service/process_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

namespace kqd {
namespace {

// The kernel's PIDFD_GET_INFO (Linux 6.13), declared here: the C library's
// headers on the build machines predate it.
struct PidfdInfo {
  uint64_t mask;
  uint64_t cgroupid;
  uint32_t pid;
  uint32_t tgid;
  uint32_t ppid;
  uint32_t ruid;
  uint32_t rgid;
  uint32_t euid;
  uint32_t egid;
  uint32_t suid;
  uint32_t sgid;
  uint32_t fsuid;
  uint32_t fsgid;
  int32_t exit_code;
  uint32_t coredump_mask;
  uint32_t spare;
};
static_assert(sizeof(PidfdInfo) == 72, "pidfd_info as of Linux 6.16 (the kernel takes any size from 64 up)");
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, PidfdInfo);
constexpr uint64_t kPidfdInfoPid = 1u << 0;
constexpr uint64_t kPidfdInfoCreds = 1u << 1;
constexpr unsigned kPidfdThread = O_EXCL;  // PIDFD_THREAD (Linux 6.9)

// The thread's ids and credentials now; false if it has exited.
bool GetInfo(int pidfd, PidfdInfo* info) {
  *info = PidfdInfo{};
  info->mask = kPidfdInfoPid | kPidfdInfoCreds;
  if (ioctl(pidfd, kPidfdGetInfo, info) != 0) return false;
  return (info->mask & (kPidfdInfoPid | kPidfdInfoCreds)) ==
         (kPidfdInfoPid | kPidfdInfoCreds);
}

}  // namespace

ProcessCache::ProcessCache(Reactor* reactor, std::string device_path)
    : reactor_(reactor), device_(std::move(device_path)), state_(std::make_shared<State>()) {}

ProcessCache::~ProcessCache() {
  std::lock_guard<std::mutex> l(state_->mu);
  for (auto& [tid, t] : state_->threads) reactor_->RemoveFd(t->pidfd.get(), t->watch);
  for (auto& [pid, p] : state_->processes) reactor_->RemoveFd(p.process->pidfd(), p.watch);
  state_->threads.clear();
  state_->processes.clear();
}

size_t ProcessCache::threads() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->threads.size();
}

size_t ProcessCache::processes() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->processes.size();
}

std::shared_ptr<CallerContext> ProcessCache::Get(pid_t tid, int* error) {
  if (tid <= 0) {
    *error = ESRCH;  // the caller is not visible in our pid namespace
    return nullptr;
  }
  std::shared_ptr<Thread> t;
  {
    std::lock_guard<std::mutex> l(state_->mu);
    auto it = state_->threads.find(tid);
    if (it != state_->threads.end()) t = it->second;
  }
  if (t) {
    // The entry holds the pidfd open while we use it, even if the reactor
    // forgets the thread meanwhile.
    PidfdInfo info;
    if (GetInfo(t->pidfd.get(), &info) &&
        static_cast<pid_t>(info.tgid) == t->process->pid()) {
      return std::make_shared<CallerContext>(t->process, tid, info.ruid, info.euid);
    }
    // Gone: the id belongs to a new thread now (or to nobody).
    ForgetThread(tid, t);
  }
  return Slow(tid, error);
}

std::shared_ptr<CallerContext> ProcessCache::Slow(pid_t tid, int* error) {
  // The thread is blocked in its request, so this id is still it.
  ScopedFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, tid, kPidfdThread)));
  PidfdInfo info;
  if (!pidfd || !GetInfo(pidfd.get(), &info) || static_cast<pid_t>(info.pid) != tid) {
    *error = ESRCH;
    return nullptr;
  }
  const pid_t tgid = static_cast<pid_t>(info.tgid);
  std::shared_ptr<RemoteProcess> process = ProcessFor(tgid, error);
  if (!process) return nullptr;
  auto caller = std::make_shared<CallerContext>(process, tid, info.ruid, info.euid);

  std::lock_guard<std::mutex> l(state_->mu);
  auto pit = state_->processes.find(tgid);
  if (pit == state_->processes.end() || pit->second.process != process ||
      state_->threads.size() >= kMaxThreads ||
      pit->second.threads >= kMaxThreadsPerProcess || state_->threads.count(tid) != 0) {
    return caller;  // served without caching the thread
  }
  auto t = std::make_shared<Thread>();
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
    std::lock_guard<std::mutex> l(s->mu);
    ForgetThreadLocked(s.get(), reactor, tid, th);
  });
  if (t->watch <= 0) return caller;  // cannot watch it: do not keep it
  ++pit->second.threads;
  state_->threads.emplace(tid, std::move(t));
  return caller;
}

std::shared_ptr<RemoteProcess> ProcessCache::ProcessFor(pid_t tgid, int* error) {
  {
    std::lock_guard<std::mutex> l(state_->mu);
    auto it = state_->processes.find(tgid);
    // The reactor forgets exited processes; exited() closes the window
    // before it has.
    if (it != state_->processes.end() && !it->second.process->exited()) return it->second.process;
  }
  std::shared_ptr<RemoteProcess> process = RemoteProcess::Open(tgid, &device_, error);
  if (!process) return nullptr;
  std::lock_guard<std::mutex> l(state_->mu);
  auto it = state_->processes.find(tgid);
  if (it != state_->processes.end()) {
    if (!it->second.process->exited()) return it->second.process;  // lost a race: use theirs
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
    std::lock_guard<std::mutex> l(s->mu);
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
  std::lock_guard<std::mutex> l(state_->mu);
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
