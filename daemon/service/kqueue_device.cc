#include "daemon/service/kqueue_device.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "daemon/os/eventfd.h"
#include "daemon/os/memory.h"
#include "daemon/os/read_file.h"
#include "daemon/service/eventfd_signal.h"
#include "daemon/service/version.h"
#include "daemon/transport/caller_memory.h"

namespace kqd {
namespace {

// A kevent ioctl as the core's KeventCall: changes and events move straight
// between the caller's memory and the core.
class RemoteKeventCall : public KeventCall {
 public:
  RemoteKeventCall(std::shared_ptr<CallerContext> caller, const kq_kevent_args& args,
                   std::shared_ptr<IoctlReply> reply, AnswerLanes* lanes, uid_t lane_uid)
      : context_(std::move(caller)), caller_(context_), tid_(context_->tid()), args_(args),
        reply_(std::move(reply)), lanes_(lanes), lane_uid_(lane_uid) {
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
  // Answered while parked: the thread at hand (the reactor's, or another
  // caller's) does not write into this caller's memory, which may wait for
  // a page on a slow filesystem; the caller's uid's answer lane does.
  void RunParkedAnswer(std::function<void()> answer) override {
    lanes_->Post(lane_uid_, std::move(answer));
  }
  // The caller named its descriptor (KQ_KEVENT_KQFD, as the C and Python
  // clients always do) and that number no longer leads to our device in its
  // process. Without the name we cannot tell which descriptor it used.
  // (close() removes the number before the FLUSH that brings us here.)
  bool DescriptorClosed() const override {
    if (!(args_.flags & KQ_KEVENT_KQFD)) return false;
    return !context_->process()->HasDeviceFd(args_.kq_fd);
  }
  uint32_t local_flags() const override {
    return args_.flags & (KQ_KEVENT_LOCAL_CHANGES | KQ_KEVENT_SKIP_LOCAL);
  }
  void Complete(int result, int error) override {
    // From here on the thread id may name another thread.
    context_->EndCall();
    if (error != 0) {
      reply_->ReplyError(error);
    } else {
      // Nothing is copied back into the argument block (the daemon never
      // changes it): the kernel then never writes it, so an argument block
      // in read-only memory cannot fail the call after its changes were
      // applied and its events taken (docs/abi.md).
      reply_->ReplyOk(result, nullptr, 0);
    }
  }

 private:
  std::shared_ptr<CallerContext> context_;
  std::shared_ptr<ProcessContext> caller_;  // context_, as the core sees it
  pid_t tid_;
  kq_kevent_args args_;
  timespec timeout_{};
  std::shared_ptr<IoctlReply> reply_;
  AnswerLanes* const lanes_;  // the device's; outlives every call
  const uid_t lane_uid_;      // the uid whose transport lane the call came by
};

// A kevent ioctl with its arrays inside the argument (KQ_IOC_KEVENT_INLINE_*):
// the changes are copied out of the request when the call is made, the
// events are gathered in a reply buffer, and the answer is header + events.
// Nothing touches the caller's memory, so nothing can wait for its pages: a
// parked call is answered right on the thread that woke it (the default
// RunParkedAnswer), without the answer lanes' hop.
class InlineKeventCall : public KeventCall {
 public:
  // `request`: the whole argument, header and `capacity` records, already
  // validated (counts within capacity, flags, kq_fd).
  InlineKeventCall(std::shared_ptr<CallerContext> caller, const kq_kevent_inline& header,
                   const unsigned char* records, std::shared_ptr<IoctlReply> reply)
      : context_(std::move(caller)), caller_(context_), header_(header),
        changes_(header.nchanges), reply_(std::move(reply)) {
    // Copied before any event is written: the events overwrite the changes
    // in the caller's array (the overlap rule of docs/abi.md).
    if (!changes_.empty())
      std::memcpy(changes_.data(), records, changes_.size() * sizeof(kq_kevent));
    timeout_.tv_sec = static_cast<time_t>(header.timeout_sec);
    timeout_.tv_nsec = static_cast<long>(header.timeout_nsec);
    out_.resize(sizeof header_);
    std::memcpy(out_.data(), &header_, sizeof header_);
  }

  const std::shared_ptr<ProcessContext>& caller() const override { return caller_; }
  size_t nchanges() const override { return header_.nchanges; }
  size_t nevents() const override { return header_.nevents; }
  const timespec* timeout() const override {
    return (header_.flags & KQ_KEVENT_TIMEOUT) ? &timeout_ : nullptr;
  }
  int FetchChanges(size_t first, kq_kevent* out, size_t n) override {
    // As for the pointer call: an interrupted caller or a stopping daemon
    // ends a changelist between slices.
    if (reply_->Cancelled()) return EINTR;
    if (first > changes_.size() || n > changes_.size() - first) return EINVAL;
    std::memcpy(out, changes_.data() + first, n * sizeof(kq_kevent));
    // The core takes each slice once: a call that then parks keeps no copy.
    if (first + n == changes_.size()) std::vector<kq_kevent>().swap(changes_);
    return 0;
  }
  int PutEvents(size_t first, const kq_kevent* events, size_t n) override {
    // The core never writes past nevents (<= the capacity); refuse anyway.
    if (first > header_.nevents || n > header_.nevents - first) return EINVAL;
    const size_t end = sizeof header_ + (first + n) * sizeof(kq_kevent);
    if (out_.size() < end) out_.resize(end);
    std::memcpy(out_.data() + sizeof header_ + first * sizeof(kq_kevent), events,
                n * sizeof(kq_kevent));
    return 0;
  }
  bool DescriptorClosed() const override {
    if (!(header_.flags & KQ_KEVENT_KQFD)) return false;
    return !context_->process()->HasDeviceFd(header_.kq_fd);
  }
  uint32_t local_flags() const override {
    return header_.flags & (KQ_KEVENT_LOCAL_CHANGES | KQ_KEVENT_SKIP_LOCAL);
  }
  void Complete(int result, int error) override {
    context_->EndCall();
    if (error != 0) return reply_->ReplyError(error);
    // The header (unchanged) and the `result` records: the kernel copies
    // back only what the reply holds, so ev[result, capacity) of the
    // caller's array is left as it was (docs/abi.md).
    const size_t size = sizeof header_ + static_cast<size_t>(result) * sizeof(kq_kevent);
    if (out_.size() < size) return reply_->ReplyError(EIO);  // a core bug
    reply_->ReplyOk(result, out_.data(), size);
  }

 private:
  std::shared_ptr<CallerContext> context_;
  std::shared_ptr<ProcessContext> caller_;  // context_, as the core sees it
  const kq_kevent_inline header_;
  timespec timeout_{};
  std::vector<kq_kevent> changes_;
  std::vector<unsigned char> out_;  // the answer: header, then events
  std::shared_ptr<IoctlReply> reply_;
};

// The capacity of an inline kevent command; 0 for any other command.
size_t InlineCapacity(uint32_t cmd) {
  switch (cmd) {
    case KQ_IOC_KEVENT_INLINE_1:
      return KQ_KEVENT_INLINE_CAP_1;
    case KQ_IOC_KEVENT_INLINE_8:
      return KQ_KEVENT_INLINE_CAP_8;
    case KQ_IOC_KEVENT_INLINE_64:
      return KQ_KEVENT_INLINE_CAP_64;
    case KQ_IOC_KEVENT_INLINE_408:
      return KQ_KEVENT_INLINE_CAP_408;
    default:
      return 0;
  }
}

// Counts that would overflow an address computation are as bad as a bad
// pointer: the buffer cannot exist.
bool SpanFits(uint64_t addr, uint64_t count) {
  if (count == 0) return true;
  if (count > UINT64_MAX / sizeof(kq_kevent)) return false;
  return addr + count * sizeof(kq_kevent) >= addr;
}

// The daemon's own open descriptors (entries of /proc/self/fd, less the
// directory's own).
uint32_t CountOwnFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  uint32_t n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n > 0 ? n - 1 : 0;
}

// Virtual and resident size in bytes, from /proc/self/statm (in pages).
void OwnMemory(uint64_t* vsize, uint64_t* rss) {
  std::string statm;
  unsigned long long pages = 0, resident = 0;
  if (ReadWholeFile("/proc/self/statm", &statm) == 0 &&
      sscanf(statm.c_str(), "%llu %llu", &pages, &resident) == 2) {
    uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    *vsize = pages * page;
    *rss = resident * page;
  }
}

template <typename T>
void Append(std::string* out, const T& record) {
  out->append(reinterpret_cast<const char*>(&record), sizeof record);
}

}  // namespace

KqueueDevice::KqueueDevice(Runtime* runtime, std::string device_path)
    : runtime_(runtime), processes_(&runtime->reactor(), std::move(device_path), &runtime->limits()) {}

KqueueDevice::~KqueueDevice() {
  std::map<uint64_t, Entry> entries;
  {
    MutexLock l(mu_);
    entries.swap(entries_);
  }
  for (auto& [h, e] : entries) e.kq->Close();
}

int KqueueDevice::Open(const Caller& caller, uint64_t* handle) {
  int err = 0;
  auto kq = Kqueue::Create(runtime_, caller.uid, &err);
  if (!kq) return err;  // the limit logs its refusals
  Entry e;
  e.kq = kq;
  e.poll = std::make_shared<PollSlot>();
  // Readiness wakes the last poller once (poll(2) re-registers each time).
  e.observer = kq->AddReadinessObserver([slot = e.poll] {
    std::unique_ptr<PollNotifier> waiting;
    {
      MutexLock l(slot->mu);
      waiting = std::move(slot->notifier);
    }
    if (waiting) waiting->Notify();
  });
  // Who opened it, for kqstat; the cache entry is what its first kevent
  // call would make anyway.
  int ignored = 0;
  if (auto context = processes_.Get(caller.tid, &ignored)) {
    e.opener = context->pid();
    context->EndCall();
  }
  MutexLock l(mu_);
  *handle = next_handle_++;
  entries_.emplace(*handle, std::move(e));
  return 0;
}

void KqueueDevice::Release(uint64_t handle) {
  Entry e;
  {
    MutexLock l(mu_);
    auto it = entries_.find(handle);
    if (it == entries_.end()) return;
    e = std::move(it->second);
    entries_.erase(it);
  }
  e.kq->RemoveReadinessObserver(e.observer);
  e.kq->Close();
  // Clients often go in bursts (a service stopped, a process group
  // killed): 100 ms after a release, the heap freed by it and by whatever
  // followed is given back to the kernel, at most ten times a second, so
  // the daemon's resident memory returns to its baseline too.
  if (!trim_pending_->exchange(true)) {
    constexpr int64_t kTrimDelayNs = 100'000'000;
    std::shared_ptr<std::atomic<bool>> pending = trim_pending_;
    runtime_->reactor().AddTimer(Reactor::Clock::kMonotonic,
                                 Reactor::Now(Reactor::Clock::kMonotonic) + kTrimDelayNs,
                                 [pending] {
                                   pending->store(false);
                                   ReturnFreedMemory();
                                 });
  }
}

namespace {

// Whether thread `tid` (as the kernel's request names it) is one of ours.
bool IsOurThread(pid_t tid) {
  if (tid <= 0) return false;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d", static_cast<int>(tid));
  return access(path, F_OK) == 0;
}

}  // namespace

void KqueueDevice::Flush(uint64_t handle, const Caller& caller) {
  // The daemon closing a copy of a client's device descriptor (DupFd checks
  // a copy's identity) closes nothing of the client's.
  if (IsOurThread(caller.tid)) return;
  std::shared_ptr<Kqueue> kq = Find(handle);
  if (!kq) return;
  // Counted now, so a kevent parking on a lane meanwhile looks again;
  // the waiters themselves are examined on the reactor thread: this runs
  // on the transport's loop thread, which must never wait for a kqueue
  // lock (the lock holder may itself be waiting for this FLUSH's answer,
  // when it is the daemon closing such a copy).
  kq->NoteDescriptorClosed();
  // The local owner closing a descriptor (maybe the one its library
  // collects for) is told through its signal before close() returns, so
  // that library's next look at its epoll instance sends it here (ABI 4,
  // docs/abi.md). Who closed is found only for a queue with an owner.
  if (kq->HasLocalSignal()) {
    int err = 0;
    if (std::shared_ptr<CallerContext> closer = processes_.Get(caller.tid, &err)) {
      kq->OwnerClosedDescriptor(*closer);
      closer->EndCall();
    }
  }
  std::weak_ptr<Kqueue> weak = kq;
  runtime_->reactor().Post([weak] {
    if (auto k = weak.lock()) k->DescriptorClosed();
  });
}

size_t KqueueDevice::open_kqueues() const {
  MutexLock l(mu_);
  return entries_.size();
}

std::shared_ptr<Kqueue> KqueueDevice::Find(uint64_t handle) const {
  MutexLock l(mu_);
  auto it = entries_.find(handle);
  return it == entries_.end() ? nullptr : it->second.kq;
}

uint32_t KqueueDevice::Poll(uint64_t handle, std::unique_ptr<PollNotifier> notifier) {
  std::shared_ptr<PollSlot> slot;
  std::shared_ptr<Kqueue> kq;
  {
    MutexLock l(mu_);
    auto it = entries_.find(handle);
    if (it == entries_.end()) return POLLERR;
    kq = it->second.kq;
    slot = it->second.poll;
  }
  if (notifier) {
    MutexLock l(slot->mu);
    slot->notifier = std::move(notifier);
  }
  // Exact: local knotes the owner drained through its own epoll instance
  // (and nested queues holding such) are dropped first, or a program that
  // polls the descriptor would see POLLIN for good and spin. An answer of 0
  // thus means an empty queue, so the next enqueue notifies the poller.
  kq->Refresh();
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
    case KQ_IOC_STAT:
      return Stat(handle, caller, in, in_size, reply.get());
    case KQ_IOC_KEVENT_INLINE_1:
    case KQ_IOC_KEVENT_INLINE_8:
    case KQ_IOC_KEVENT_INLINE_64:
    case KQ_IOC_KEVENT_INLINE_408:
      return InlineKevent(kq, caller, InlineCapacity(cmd), in, in_size, std::move(reply));
    case KQ_IOC_LOCAL_ATTACH:
      return LocalAttach(kq, caller, in, in_size, reply.get());
    default:
      runtime_->log().ClientLog(LogLevel::kDebug, caller.uid,
                                "thread %d: unknown ioctl 0x%08x (ENOTTY)",
                                static_cast<int>(caller.tid), cmd);
      return reply->ReplyError(ENOTTY);
  }
}

bool KqueueDevice::ValidKeventFlags(const Caller& caller, uint32_t flags, int32_t kq_fd) {
  constexpr uint32_t kKnown =
      KQ_KEVENT_TIMEOUT | KQ_KEVENT_KQFD | KQ_KEVENT_LOCAL_CHANGES | KQ_KEVENT_SKIP_LOCAL;
  if ((flags & ~kKnown) != 0 ||
      (!(flags & KQ_KEVENT_KQFD) && kq_fd != 0) || ((flags & KQ_KEVENT_KQFD) && kq_fd < 0)) {
    runtime_->log().ClientLog(LogLevel::kInfo, caller.uid,
                              "thread %d: kevent with invalid flags 0x%x / kq_fd %d (EINVAL)",
                              static_cast<int>(caller.tid), flags, kq_fd);
    return false;
  }
  return true;
}

void KqueueDevice::Kevent(const std::shared_ptr<Kqueue>& kq, const Caller& caller,
                          const void* in, size_t in_size,
                          std::unique_ptr<IoctlReply> reply) {
  kq_kevent_args args;
  if (in_size != sizeof args) return reply->ReplyError(EINVAL);
  std::memcpy(&args, in, sizeof args);
  if (!ValidKeventFlags(caller, args.flags, args.kq_fd)) return reply->ReplyError(EINVAL);
  if (!SpanFits(args.changelist, args.nchanges) || !SpanFits(args.eventlist, args.nevents))
    return reply->ReplyError(EFAULT);
  // The count is returned as the ioctl's int result.
  if (args.nevents > INT32_MAX) args.nevents = INT32_MAX;
  int err = 0;
  std::shared_ptr<CallerContext> context = processes_.Get(caller.tid, &err);
  if (!context) return reply->ReplyError(err);
  std::shared_ptr<IoctlReply> shared_reply(std::move(reply));
  auto call = std::make_unique<RemoteKeventCall>(context, args, shared_reply,
                                                 &answer_lanes_, caller.uid);
  StartKevent(kq, *context, args.flags, args.kq_fd, std::move(call), shared_reply);
}

void KqueueDevice::InlineKevent(const std::shared_ptr<Kqueue>& kq, const Caller& caller,
                                size_t capacity, const void* in, size_t in_size,
                                std::unique_ptr<IoctlReply> reply) {
  kq_kevent_inline header;
  if (in_size != sizeof header + capacity * sizeof(kq_kevent)) return reply->ReplyError(EINVAL);
  std::memcpy(&header, in, sizeof header);
  if (!ValidKeventFlags(caller, header.flags, header.kq_fd)) return reply->ReplyError(EINVAL);
  if (header.nchanges > capacity || header.nevents > capacity) {
    runtime_->log().ClientLog(LogLevel::kInfo, caller.uid,
                              "thread %d: inline kevent of %u changes / %u events with room "
                              "for %zu (EINVAL)",
                              static_cast<int>(caller.tid), header.nchanges, header.nevents,
                              capacity);
    return reply->ReplyError(EINVAL);
  }
  int err = 0;
  std::shared_ptr<CallerContext> context = processes_.Get(caller.tid, &err);
  if (!context) return reply->ReplyError(err);
  std::shared_ptr<IoctlReply> shared_reply(std::move(reply));
  auto call = std::make_unique<InlineKeventCall>(
      context, header, static_cast<const unsigned char*>(in) + sizeof header, shared_reply);
  StartKevent(kq, *context, header.flags, header.kq_fd, std::move(call), shared_reply);
}

void KqueueDevice::StartKevent(const std::shared_ptr<Kqueue>& kq, CallerContext& context,
                               uint32_t flags, int32_t kq_fd, std::unique_ptr<KeventCall> call,
                               const std::shared_ptr<IoctlReply>& reply) {
  // Which of the caller's descriptors is this kqueue: what lets another of
  // its kqueues watch this one (EVFILT_READ on a kqueue fd).
  if (flags & KQ_KEVENT_KQFD)
    context.process()->RememberKqueueFd(kq_fd, kq, &runtime_->limits(), context.euid());
  uint64_t wait_id = kq->Kevent(std::move(call));
  // A close() whose FLUSH was handled before this call parked found nothing
  // to end. That includes a FLUSH handled before this request was even read:
  // the caller's thread holds the file from its ioctl's entry, but another
  // thread's close() can queue the FLUSH before the ioctl's request is
  // queued, and a spare serving thread can take them in either order. So a
  // parking call looks again whenever this kqueue has ever seen a close (a
  // kqueue nobody closed a descriptor of pays nothing).
  if (wait_id != 0 && (flags & KQ_KEVENT_KQFD) && kq->descriptor_closes() != 0) {
    std::weak_ptr<Kqueue> weak = kq;
    runtime_->reactor().Post([weak] {
      if (auto k = weak.lock()) k->DescriptorClosed();
    });
  }
  if (wait_id != 0) {
    // A signal to the caller answers the parked call with EINTR. If the call
    // was answered meanwhile, Interrupt finds nothing and the transport
    // ignores the late callback.
    std::weak_ptr<Kqueue> weak = kq;
    reply->OnInterrupt([weak, wait_id] {
      if (auto k = weak.lock()) k->Interrupt(wait_id);
    });
  }
}

void KqueueDevice::LocalAttach(const std::shared_ptr<Kqueue>& kq, const Caller& caller,
                               const void* in, size_t in_size, IoctlReply* reply) {
  kq_local_attach args;
  if (in_size != sizeof args) return reply->ReplyError(EINVAL);
  std::memcpy(&args, in, sizeof args);
  auto refuse = [&](int err, const char* why) {
    runtime_->log().ClientLog(LogLevel::kInfo, caller.uid,
                              "thread %d: KQ_IOC_LOCAL_ATTACH of fd %d: %s (%s)",
                              static_cast<int>(caller.tid), static_cast<int>(args.epoll_fd), why,
                              std::strerror(err));
    reply->ReplyError(err);
  };
  if (args.flags != 0 || args.reserved != 0) return refuse(EINVAL, "nonzero flags/reserved");
  if (args.epoll_fd < 0) return refuse(EBADF, "negative descriptor");
  // Cheap refusals first: nothing is set up for a queue that has an owner.
  if (kq->HasLocalOwner()) return refuse(EBUSY, "the queue has a local owner");
  int err = 0;
  std::shared_ptr<CallerContext> context = processes_.Get(caller.tid, &err);
  if (!context) return reply->ReplyError(err);
  // The call ends with this function (the owner's context is kept past it).
  struct CallEnd {
    CallerContext& c;
    ~CallEnd() { c.EndCall(); }
  } call_end{*context};
  std::unique_ptr<UserLimits::Charge> charge =
      runtime_->limits().Take(context->euid(), Resource::kDaemonFds);
  if (!charge) return refuse(EMFILE, "the user's daemon descriptors are spent");
  ScopedFd efd = OpenEventfd();
  // Out of descriptors is the daemon's trouble: ENFILE (docs/security.md).
  if (!efd) return refuse(ENFILE, "no eventfd");
  {
    // The caller's instance, copied for one epoll_ctl and closed. DupFd
    // refuses our own device (EOPNOTSUPP): not an epoll instance either.
    ScopedFd epoll_copy = context->process()->DupFd(args.epoll_fd, &err);
    if (!epoll_copy) {
      if (err == EOPNOTSUPP) return refuse(EINVAL, "not an epoll instance");
      if (err == EMFILE || err == ENFILE) return refuse(ENFILE, "no copy");
      return refuse(err, "no such descriptor");
    }
    if (int add_err = AddToEpoll(epoll_copy.get(), efd.get(), args.tag))
      return refuse(add_err, add_err == EINVAL ? "not an epoll instance" : "epoll_ctl failed");
  }
  // From here, closing efd (the signal dropped on EBUSY or at the queue's
  // close) removes the item from the caller's instance again.
  auto signal = std::make_unique<EventfdSignal>(std::move(efd), std::move(charge));
  if (int attach_err = kq->AttachLocal(context, std::move(signal)))
    return refuse(attach_err, "the queue has a local owner or is closed");
  reply->ReplyOk(0, nullptr, 0);
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

std::string KqueueDevice::StatReport(const Caller& caller, uint64_t self, pid_t pid) const {
  struct Row {
    uint64_t id;
    pid_t opener;
    std::shared_ptr<Kqueue> kq;
  };
  std::vector<Row> rows;
  {
    MutexLock l(mu_);
    rows.reserve(entries_.size());
    for (const auto& [h, e] : entries_) rows.push_back({h, e.opener, e.kq});
  }
  // Each kqueue is counted under its own lock, with the device's released.
  const bool all = caller.uid == 0;
  kq_stat_header head{};
  head.stat_version = KQ_STAT_VERSION;
  head.header_size = sizeof(kq_stat_header);
  head.queue_size = sizeof(kq_stat_queue);
  head.user_size = sizeof(kq_stat_user);
  head.daemon_pid = getpid();
  head.daemon_fds = CountOwnFds();
  OwnMemory(&head.daemon_vsize, &head.daemon_rss);
  head.uptime_sec = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                              std::chrono::steady_clock::now() - started_)
                                              .count());
  head.log_suppressed = runtime_->log().suppressed();
  std::string queues;
  for (const Row& r : rows) {
    Kqueue::Stats s = r.kq->Snapshot();
    head.total_kqueues++;
    head.total_knotes += s.knotes;
    head.total_pending += s.pending;
    head.total_waiters += s.waiters;
    if (r.id == self) continue;
    if (!all && r.kq->uid() != caller.uid) continue;
    if (pid > 0 && r.opener != pid) continue;
    kq_stat_queue q{};
    q.id = r.id;
    q.pid = r.opener;
    q.uid = r.kq->uid();
    q.knotes = static_cast<uint32_t>(s.knotes);
    q.pending = static_cast<uint32_t>(s.pending);
    q.waiters = static_cast<uint32_t>(s.waiters);
    for (const auto& [filter, n] : s.knotes_by_filter)
      q.by_filter[filter < KQ_STAT_FILTER_SLOTS - 1 ? filter : KQ_STAT_FILTER_SLOTS - 1] +=
          static_cast<uint32_t>(n);
    Append(&queues, q);
    head.nqueues++;
  }
  // Usage against the limits, by user. KQ_RES_* follow Resource's order.
  static_assert(static_cast<int>(Resource::kKqueues) == KQ_RES_KQUEUES, "res order");
  static_assert(static_cast<int>(Resource::kKnotes) == KQ_RES_KNOTES, "res order");
  static_assert(static_cast<int>(Resource::kTimers) == KQ_RES_TIMERS, "res order");
  static_assert(static_cast<int>(Resource::kFastTimers) == KQ_RES_FAST_TIMERS, "res order");
  static_assert(static_cast<int>(Resource::kDaemonFds) == KQ_RES_DAEMON_FDS, "res order");
  static_assert(static_cast<int>(Resource::kKqueueNames) == KQ_RES_KQUEUE_NAMES, "res order");
  static_assert(static_cast<int>(Resource::kWatchedFds) == KQ_RES_WATCHED_FDS, "res order");
  static_assert(static_cast<int>(Resource::kCount) == KQ_RES_COUNT, "every resource named");
  static_assert(static_cast<int>(Resource::kCount) <= KQ_STAT_RESOURCES, "res slots");
  UserLimits& limits = runtime_->limits();
  std::string users;
  for (const auto& [uid, used] : limits.AllInUse()) {
    if (!all && uid != caller.uid) continue;
    kq_stat_user u{};
    u.uid = uid;
    for (int i = 0; i < static_cast<int>(Resource::kCount); i++) {
      u.used[i] = used[i];
      u.limit[i] = limits.Ceiling(static_cast<Resource>(i));
    }
    Append(&users, u);
    head.nusers++;
  }
  std::string out;
  Append(&out, head);
  return out + queues + users;
}

void KqueueDevice::Stat(uint64_t handle, const Caller& caller, const void* in, size_t in_size,
                        IoctlReply* reply) {
  kq_stat_args args;
  if (in_size != sizeof args) return reply->ReplyError(EINVAL);
  std::memcpy(&args, in, sizeof args);
  if (args.flags != 0 || args.pid < 0) return reply->ReplyError(EINVAL);
  std::string report = StatReport(caller, handle, args.pid);
  args.needed = report.size();
  int written = 0;
  if (args.buf_size >= report.size()) {
    if (int err = WriteCallerMemory(caller.tid, args.buf, report.data(), report.size()))
      return reply->ReplyError(err);
    written = static_cast<int>(report.size());
  }
  reply->ReplyOk(written, &args, sizeof args);
}

}  // namespace kqd
