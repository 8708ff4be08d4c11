#include "daemon/service/kqueue_device.h"

#include <errno.h>
#include <poll.h>

#include <cstring>
#include <vector>

#include "daemon/service/version.h"
#include "daemon/transport/caller_memory.h"

namespace kqd {
namespace {

// A kevent ioctl as the core's KeventCall: changes and events move straight
// between the caller's memory and the core.
class RemoteKeventCall : public KeventCall {
 public:
  RemoteKeventCall(std::shared_ptr<ProcessContext> caller, pid_t tid,
                   const kq_kevent_args& args, std::shared_ptr<IoctlReply> reply)
      : caller_(std::move(caller)), tid_(tid), args_(args), reply_(std::move(reply)) {
    timeout_.tv_sec = static_cast<time_t>(args.timeout_sec);
    timeout_.tv_nsec = static_cast<long>(args.timeout_nsec);
  }

  const std::shared_ptr<ProcessContext>& caller() const override { return caller_; }
  size_t nchanges() const override { return args_.nchanges; }
  size_t nevents() const override { return args_.nevents; }
  const timespec* timeout() const override {
    return (args_.flags & KQ_KEVENT_TIMEOUT) ? &timeout_ : nullptr;
  }
  int FetchChanges(size_t first, kq_kevent* out, size_t n) override {
    // The core fetches a large changelist one slice at a time: a caller
    // interrupted meanwhile (SIGKILL included) or a daemon shutting down
    // stops it here, with the changes applied so far kept.
    if (reply_->Cancelled()) return EINTR;
    return ReadCallerMemory(tid_, args_.changelist + first * sizeof(kq_kevent), out,
                            n * sizeof(kq_kevent));
  }
  int PutEvents(size_t first, const kq_kevent* events, size_t n) override {
    return WriteCallerMemory(tid_, args_.eventlist + first * sizeof(kq_kevent), events,
                             n * sizeof(kq_kevent));
  }
  void Complete(int result, int error) override {
    if (error != 0) {
      reply_->ReplyError(error);
    } else {
      kq_kevent_args out = args_;  // the ioctl is _IOWR: echo the arguments
      reply_->ReplyOk(result, &out, sizeof out);
    }
  }

 private:
  std::shared_ptr<ProcessContext> caller_;
  pid_t tid_;
  kq_kevent_args args_;
  timespec timeout_{};
  std::shared_ptr<IoctlReply> reply_;
};

// Counts that would overflow an address computation are as bad as a bad
// pointer: the buffer cannot exist.
bool SpanFits(uint64_t addr, uint64_t count) {
  if (count == 0) return true;
  if (count > UINT64_MAX / sizeof(kq_kevent)) return false;
  return addr + count * sizeof(kq_kevent) >= addr;
}

}  // namespace

KqueueDevice::KqueueDevice(Runtime* runtime, std::string device_path)
    : runtime_(runtime), processes_(std::move(device_path)) {}

KqueueDevice::~KqueueDevice() {
  std::map<uint64_t, Entry> entries;
  {
    std::lock_guard<std::mutex> l(mu_);
    entries.swap(entries_);
  }
  for (auto& [h, e] : entries) e.kq->Close();
}

int KqueueDevice::Open(const Caller& caller, uint64_t* handle) {
  int err = 0;
  auto kq = Kqueue::Create(runtime_, caller.uid, &err);
  if (!kq) return err;
  Entry e;
  e.kq = kq;
  e.notifier = std::make_shared<std::unique_ptr<PollNotifier>>();
  e.notifier_mu = std::make_shared<std::mutex>();
  // Readiness wakes the last poller once (poll(2) re-registers each time).
  e.observer = kq->AddReadinessObserver([n = e.notifier, mu = e.notifier_mu] {
    std::unique_ptr<PollNotifier> waiting;
    {
      std::lock_guard<std::mutex> l(*mu);
      waiting = std::move(*n);
    }
    if (waiting) waiting->Notify();
  });
  std::lock_guard<std::mutex> l(mu_);
  *handle = next_handle_++;
  entries_.emplace(*handle, std::move(e));
  return 0;
}

void KqueueDevice::Release(uint64_t handle) {
  Entry e;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = entries_.find(handle);
    if (it == entries_.end()) return;
    e = std::move(it->second);
    entries_.erase(it);
  }
  e.kq->RemoveReadinessObserver(e.observer);
  e.kq->Close();
}

size_t KqueueDevice::open_kqueues() const {
  std::lock_guard<std::mutex> l(mu_);
  return entries_.size();
}

std::shared_ptr<Kqueue> KqueueDevice::Find(uint64_t handle) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = entries_.find(handle);
  return it == entries_.end() ? nullptr : it->second.kq;
}

uint32_t KqueueDevice::Poll(uint64_t handle, std::unique_ptr<PollNotifier> notifier) {
  std::shared_ptr<std::unique_ptr<PollNotifier>> slot;
  std::shared_ptr<std::mutex> mu;
  std::shared_ptr<Kqueue> kq;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = entries_.find(handle);
    if (it == entries_.end()) return POLLERR;
    kq = it->second.kq;
    slot = it->second.notifier;
    mu = it->second.notifier_mu;
  }
  if (notifier) {
    std::lock_guard<std::mutex> l(*mu);
    *slot = std::move(notifier);
  }
  return kq->Pending() > 0 ? (POLLIN | POLLRDNORM) : 0;
}

void KqueueDevice::Ioctl(uint64_t handle, const Caller& caller, uint32_t cmd,
                         uint64_t arg, const void* in, size_t in_size,
                         std::unique_ptr<IoctlReply> reply) {
  std::shared_ptr<Kqueue> kq = Find(handle);
  if (!kq) return reply->ReplyError(EBADF);
  switch (cmd) {
    case KQ_IOC_KEVENT:
      return Kevent(kq, caller, in, in_size, std::move(reply));
    case KQ_IOC_VERSION: {
      kq_version v{};
      v.abi_version = KQ_ABI_VERSION;
      std::strncpy(v.daemon_version, kDaemonVersion, sizeof v.daemon_version - 1);
      return reply->ReplyOk(0, &v, sizeof v);
    }
    case KFILTER_BYNAME:
      return FilterByName(caller, in, in_size, reply.get());
    case KFILTER_BYFILTER:
      return FilterByNumber(caller, in, in_size, reply.get());
    default:
      return reply->ReplyError(ENOTTY);
  }
}

void KqueueDevice::Kevent(const std::shared_ptr<Kqueue>& kq, const Caller& caller,
                          const void* in, size_t in_size,
                          std::unique_ptr<IoctlReply> reply) {
  kq_kevent_args args;
  if (in_size != sizeof args) return reply->ReplyError(EINVAL);
  std::memcpy(&args, in, sizeof args);
  if ((args.flags & ~(KQ_KEVENT_TIMEOUT | KQ_KEVENT_KQFD)) != 0 ||
      (!(args.flags & KQ_KEVENT_KQFD) && args.kq_fd != 0) ||
      ((args.flags & KQ_KEVENT_KQFD) && args.kq_fd < 0))
    return reply->ReplyError(EINVAL);
  if (!SpanFits(args.changelist, args.nchanges) || !SpanFits(args.eventlist, args.nevents))
    return reply->ReplyError(EFAULT);
  // The count is returned as the ioctl's int result.
  if (args.nevents > INT32_MAX) args.nevents = INT32_MAX;
  int err = 0;
  std::shared_ptr<RemoteProcess> process = processes_.Get(caller.tid, &err);
  if (!process) return reply->ReplyError(err);
  // Which of the caller's descriptors is this kqueue: what lets another of
  // its kqueues watch this one (EVFILT_READ on a kqueue fd).
  if (args.flags & KQ_KEVENT_KQFD) process->RememberKqueueFd(args.kq_fd, kq);
  std::shared_ptr<IoctlReply> shared_reply(std::move(reply));
  uint64_t wait_id = kq->Kevent(
      std::make_unique<RemoteKeventCall>(process, caller.tid, args, shared_reply));
  if (wait_id != 0) {
    // A signal to the caller answers the parked call with EINTR. If the call
    // was answered meanwhile, Interrupt finds nothing and the transport
    // ignores the late callback.
    std::weak_ptr<Kqueue> weak = kq;
    shared_reply->OnInterrupt([weak, wait_id] {
      if (auto k = weak.lock()) k->Interrupt(wait_id);
    });
  }
}

void KqueueDevice::FilterByName(const Caller& caller, const void* in, size_t in_size,
                                IoctlReply* reply) {
  kfilter_mapping m;
  if (in_size != sizeof m) return reply->ReplyError(EINVAL);
  std::memcpy(&m, in, sizeof m);
  std::string name;
  // NetBSD copies the name in with copyinstr up to KFILTER_MAXNAME.
  if (int err = ReadCallerString(caller.tid, reinterpret_cast<uint64_t>(m.name),
                                 KFILTER_MAXNAME, &name))
    return reply->ReplyError(err);
  uint32_t number = 0;
  if (int err = runtime_->filters().NumberOf(name, &number)) return reply->ReplyError(err);
  m.filter = number;
  reply->ReplyOk(0, &m, sizeof m);
}

void KqueueDevice::FilterByNumber(const Caller& caller, const void* in, size_t in_size,
                                  IoctlReply* reply) {
  kfilter_mapping m;
  if (in_size != sizeof m) return reply->ReplyError(EINVAL);
  std::memcpy(&m, in, sizeof m);
  std::string name;
  if (int err = runtime_->filters().NameOf(m.filter, &name)) return reply->ReplyError(err);
  // NetBSD copies out with copyoutstr(name, m.name, m.len): the NUL must fit.
  if (name.size() + 1 > m.len) return reply->ReplyError(ENAMETOOLONG);
  if (int err = WriteCallerMemory(caller.tid, reinterpret_cast<uint64_t>(m.name),
                                  name.c_str(), name.size() + 1))
    return reply->ReplyError(err);
  reply->ReplyOk(0, &m, sizeof m);
}

}  // namespace kqd
