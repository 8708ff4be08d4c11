#include "daemon/transport/fuse_request_dispatch.h"

#include <errno.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#include <functional>
#include <utility>
#include <vector>

#include "daemon/transport/fuse_api.h"
#include "daemon/transport/session_loop.h"

namespace kqd {

IoctlPlan PlanIoctl(uint32_t cmd, uint32_t flags, size_t in_size,
                    size_t out_size) {
  IoctlPlan plan;
  if (flags & FUSE_IOCTL_COMPAT) {
    plan.error = EOPNOTSUPP;
    return plan;
  }
  if (!(flags & FUSE_IOCTL_UNRESTRICTED)) {
    plan.action = IoctlPlan::Action::kDispatch;
    plan.in_size = in_size;
    plan.out_size = out_size;
    return plan;
  }
  const size_t size = _IOC_SIZE(cmd);
  const size_t want_in = (_IOC_DIR(cmd) & _IOC_WRITE) ? size : 0;
  const size_t want_out = (_IOC_DIR(cmd) & _IOC_READ) ? size : 0;
  if (in_size == want_in && out_size == want_out) {
    plan.action = IoctlPlan::Action::kDispatch;
    plan.in_size = in_size;
    plan.out_size = out_size;
  } else if (in_size == 0 && out_size == 0) {
    // First round of an unrestricted ioctl. (want_in, want_out) != (0, 0)
    // here, and the kernel answers a retry with exactly those sizes, which
    // the branch above dispatches: at most one retry per request.
    plan.action = IoctlPlan::Action::kRetry;
    plan.in_size = want_in;
    plan.out_size = want_out;
  } else {
    plan.error = EIO;
  }
  return plan;
}

namespace {

Caller CallerOf(fuse_req_t req) {
  const struct fuse_ctx* ctx = fuse_req_ctx(req);
  Caller caller;
  caller.tid = ctx->pid;
  caller.uid = ctx->uid;
  caller.gid = ctx->gid;
  return caller;
}

}  // namespace

namespace dispatch_internal {

// One ioctl between its arrival and its answer.
struct PendingIoctl {
  PendingIoctl(uint64_t id_in, fuse_req_t req_in, size_t max_out_in)
      : id(id_in), max_out(max_out_in), req(req_in) {}

  const uint64_t id;      // key in ReplyChannel's registry
  const size_t max_out;   // bytes the kernel will copy back, at most

  // The request's answer state. Taken under the reply channel's gate
  // (shared) or on the loop thread, and under the dispatcher's lanes_mu_;
  // only the session loop's lock (to post) is taken under it.
  Mutex mu;
  fuse_req_t req GUARDED_BY(mu);  // null once answered
  std::function<void()> on_interrupt GUARDED_BY(mu);
  bool interrupted GUARDED_BY(mu) = false;       // kernel said so
  bool interrupt_posted GUARDED_BY(mu) = false;  // callback queued

  // Takes the request for answering; null if it was answered already.
  fuse_req_t Take() EXCLUDES(mu) {
    MutexLock lock(mu);
    fuse_req_t r = req;
    req = nullptr;
    on_interrupt = nullptr;
    return r;
  }
};

// State shared by the dispatcher and everything it hands to the handler
// (replies, poll notifiers), which may outlive the dispatcher.
class ReplyChannel {
 public:
  explicit ReplyChannel(SessionLoop* loop) : loop_(loop) {}

  // Runs fn() while the session (and the loop) are guaranteed to exist;
  // does nothing after Close(). Several replies may run at once: libfuse's
  // reply path is thread-safe, the lock only keeps Close() out.
  template <typename Fn>
  void WithSession(Fn&& fn) EXCLUDES(gate_mu_) {
    ReaderMutexLock lock(gate_mu_);
    if (closed_) return;
    fn();
  }

  // IoctlReply::Cancelled for `p`.
  bool Cancelled(PendingIoctl* p) EXCLUDES(gate_mu_, p->mu) {
    ReaderMutexLock lock(gate_mu_);
    if (closed_ || loop_->stopping()) return true;
    MutexLock l(p->mu);
    return p->interrupted || p->req == nullptr;
  }

  // Waits for replies in progress; later WithSession() calls do nothing.
  void Close() EXCLUDES(gate_mu_) {
    WriterMutexLock lock(gate_mu_);
    closed_ = true;
  }

  void Add(const std::shared_ptr<PendingIoctl>& p) EXCLUDES(pending_mu_) {
    MutexLock lock(pending_mu_);
    pending_[p->id] = p;
  }
  std::shared_ptr<PendingIoctl> Find(uint64_t id) EXCLUDES(pending_mu_) {
    MutexLock lock(pending_mu_);
    auto it = pending_.find(id);
    return it == pending_.end() ? nullptr : it->second;
  }
  void Remove(uint64_t id) EXCLUDES(pending_mu_) {
    MutexLock lock(pending_mu_);
    pending_.erase(id);
  }
  std::vector<std::shared_ptr<PendingIoctl>> TakeAll() EXCLUDES(pending_mu_) {
    MutexLock lock(pending_mu_);
    std::vector<std::shared_ptr<PendingIoctl>> all;
    all.reserve(pending_.size());
    for (auto& entry : pending_) all.push_back(std::move(entry.second));
    pending_.clear();
    return all;
  }

  // Answers `p` with send(req) unless it was answered already; at most one
  // send per request, whichever thread gets there first.
  template <typename Send>
  void Answer(PendingIoctl* p, Send&& send) {
    WithSession([&] {
      fuse_req_t req = p->Take();
      if (req == nullptr) return;
      Remove(p->id);
      send(req);
    });
  }

  // Queues p's interrupt callback on the loop thread if the kernel reported
  // an interrupt and a callback is set. Callers hold p->mu, and either the
  // session gate or the loop thread.
  void MaybePostInterruptLocked(const std::shared_ptr<PendingIoctl>& p) REQUIRES(p->mu) {
    if (!p->interrupted || !p->on_interrupt || p->interrupt_posted) return;
    p->interrupt_posted = true;
    std::weak_ptr<PendingIoctl> weak = p;
    // Deferred, never run inside libfuse or inside the handler's own call:
    // the callback typically takes the handler's lock and replies.
    loop_->Post([weak] {
      std::shared_ptr<PendingIoctl> pending = weak.lock();
      if (!pending) return;  // answered and forgotten meanwhile
      std::function<void()> fn;
      {
        MutexLock lock(pending->mu);
        if (pending->req == nullptr) return;  // answered meanwhile
        fn = std::move(pending->on_interrupt);
        pending->on_interrupt = nullptr;
      }
      if (fn) fn();
    });
  }

 private:
  SessionLoop* const loop_;

  // The session gate: replies and poll notifications hold it shared while
  // they use the session, Close() exclusively. First in the transport's
  // order after the dispatcher's lanes_mu_: a PendingIoctl's mu, the
  // registry's pending_mu_ and the session loop's lock come under it.
  SharedMutex gate_mu_;
  bool closed_ GUARDED_BY(gate_mu_) = false;

  // The registry of unanswered ioctls. A leaf.
  Mutex pending_mu_;
  // Unanswered ioctls by id: the interrupt callback finds its request here
  // (libfuse hands it only an opaque pointer, and the request may have been
  // answered and freed by another thread a moment before), and Disconnect()
  // answers whatever is left.
  std::unordered_map<uint64_t, std::shared_ptr<PendingIoctl>> pending_
      GUARDED_BY(pending_mu_);
};

}  // namespace dispatch_internal

namespace {

using dispatch_internal::PendingIoctl;
using dispatch_internal::ReplyChannel;

class FuseIoctlReply : public IoctlReply {
 public:
  FuseIoctlReply(std::shared_ptr<ReplyChannel> channel,
                 std::shared_ptr<PendingIoctl> pending)
      : channel_(std::move(channel)), pending_(std::move(pending)) {}

  // The contract says an unanswered reply answers EIO when destroyed.
  ~FuseIoctlReply() override { ReplyError(EIO); }

  void ReplyOk(int result, const void* out, size_t out_size) override {
    if (result < 0 || out_size > pending_->max_out ||
        (out_size > 0 && out == nullptr)) {
      // A handler bug. Truncating or passing a negative result through
      // would hand the caller garbage; EIO says something went wrong.
      fprintf(stderr,
              "kqueued: bad ioctl reply (result %d, %zu bytes, room for "
              "%zu)\n",
              result, out_size, pending_->max_out);
      ReplyError(EIO);
      return;
    }
    channel_->Answer(pending_.get(), [&](fuse_req_t req) {
      fuse_reply_ioctl(req, result, out_size > 0 ? out : nullptr, out_size);
    });
  }

  void ReplyError(int error) override {
    if (error <= 0) error = EIO;  // 0 would read as success without data
    channel_->Answer(pending_.get(),
                     [&](fuse_req_t req) { fuse_reply_err(req, error); });
  }

  void OnInterrupt(std::function<void()> fn) override {
    channel_->WithSession([&] {
      MutexLock lock(pending_->mu);
      if (pending_->req == nullptr) return;  // answered: nothing to do
      pending_->on_interrupt = std::move(fn);
      pending_->interrupt_posted = false;
      // The interrupt may already have arrived (before the handler parked
      // the request): deliver it now, on the loop thread.
      channel_->MaybePostInterruptLocked(pending_);
    });
  }

  bool Cancelled() const override { return channel_->Cancelled(pending_.get()); }

 private:
  const std::shared_ptr<ReplyChannel> channel_;
  const std::shared_ptr<PendingIoctl> pending_;
};

class FusePollNotifier : public PollNotifier {
 public:
  FusePollNotifier(std::shared_ptr<ReplyChannel> channel, fuse_pollhandle* ph)
      : channel_(std::move(channel)), ph_(ph) {}

  // Only frees memory: safe after the session is gone.
  ~FusePollNotifier() override { fuse_pollhandle_destroy(ph_); }

  void Notify() override {
    channel_->WithSession([&] { fuse_lowlevel_notify_poll(ph_); });
  }

 private:
  const std::shared_ptr<ReplyChannel> channel_;
  fuse_pollhandle* const ph_;  // owned
};

}  // namespace

RequestDispatcher::RequestDispatcher(DeviceHandler* handler, SessionLoop* loop)
    : handler_(handler),
      loop_(loop),
      channel_(std::make_shared<ReplyChannel>(loop)) {}

RequestDispatcher::~RequestDispatcher() { Disconnect(); }

RequestDispatcher* RequestDispatcher::From(fuse_req_t req) {
  return static_cast<RequestDispatcher*>(fuse_req_userdata(req));
}

void RequestDispatcher::OnInit(void* userdata) {
  static_cast<RequestDispatcher*>(userdata)->loop_->MarkReady();
}

void RequestDispatcher::OnOpen(fuse_req_t req, fuse_file_info* fi) {
  RequestDispatcher* self = From(req);
  uint64_t handle = 0;
  int err = self->handler_->Open(CallerOf(req), &handle);
  if (err != 0) {
    fuse_reply_err(req, err > 0 ? err : EIO);
    return;
  }
  {
    MutexLock lock(self->handles_mu_);
    ++self->open_handles_[handle];
  }
  fi->fh = handle;
  fi->direct_io = 1;    // no page cache: read/write (if ever) reach us
  fi->nonseekable = 1;  // a kqueue has no file position
  fi->keep_cache = 0;
  // FLUSH wanted: it is how we learn that a descriptor was closed while
  // another thread waits in kevent() on it (RELEASE cannot come then: the
  // waiting ioctl holds the file).
  fi->noflush = 0;
  if (fuse_reply_open(req, fi) != 0) {
    // The kernel dropped the open (the caller was killed meanwhile): no
    // RELEASE will ever come for this handle, so release it here.
    {
      MutexLock lock(self->handles_mu_);
      auto it = self->open_handles_.find(handle);
      if (it != self->open_handles_.end() && --it->second == 0) {
        self->open_handles_.erase(it);
      }
    }
    self->handler_->Release(handle);
  }
}

void RequestDispatcher::OnRelease(fuse_req_t req, fuse_file_info* fi) {
  RequestDispatcher* self = From(req);
  const uint64_t handle = fi->fh;
  bool known = false;
  {
    MutexLock lock(self->handles_mu_);
    auto it = self->open_handles_.find(handle);
    if (it != self->open_handles_.end()) {
      known = true;
      if (--it->second == 0) self->open_handles_.erase(it);
    }
  }
  // The kernel only sends RELEASE for opens it accepted; an unknown handle
  // would be a kernel or bookkeeping bug, and releasing it twice worse.
  if (known) self->handler_->Release(handle);
  fuse_reply_err(req, 0);
}

void RequestDispatcher::OnFlush(fuse_req_t req, fuse_file_info* fi) {
  RequestDispatcher* self = From(req);
  self->handler_->Flush(fi->fh, CallerOf(req));
  fuse_reply_err(req, 0);
}

void RequestDispatcher::OnKernelInterrupt(fuse_req_t req, void* data) {
  // Runs on the loop thread, inside libfuse (with the request's lock held):
  // only record the interrupt and queue the handler's callback.
  RequestDispatcher* self = From(req);
  const uint64_t id = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(data));
  std::shared_ptr<PendingIoctl> pending = self->channel_->Find(id);
  if (!pending) return;  // answered already
  MutexLock lock(pending->mu);
  if (pending->req == nullptr) return;
  pending->interrupted = true;
  self->channel_->MaybePostInterruptLocked(pending);
}

void RequestDispatcher::OnIoctl(fuse_req_t req, uint32_t cmd, void* arg,
                                fuse_file_info* fi, unsigned flags,
                                const void* in, size_t in_size,
                                size_t out_size) {
  RequestDispatcher* self = From(req);
  const IoctlPlan plan = PlanIoctl(cmd, flags, in_size, out_size);
  switch (plan.action) {
    case IoctlPlan::Action::kReject:
      fuse_reply_err(req, plan.error);
      return;
    case IoctlPlan::Action::kRetry: {
      struct iovec in_iov = {arg, plan.in_size};
      struct iovec out_iov = {arg, plan.out_size};
      fuse_reply_ioctl_retry(req, plan.in_size ? &in_iov : nullptr,
                             plan.in_size ? 1 : 0,
                             plan.out_size ? &out_iov : nullptr,
                             plan.out_size ? 1 : 0);
      return;
    }
    case IoctlPlan::Action::kDispatch:
      break;
  }

  const uint64_t id = self->next_ioctl_id_++;
  auto pending = std::make_shared<PendingIoctl>(id, req, plan.out_size);
  self->channel_->Add(pending);
  // Registered before the handler sees the request, so no interrupt is
  // missed; if one arrived before the request was even read, libfuse calls
  // OnKernelInterrupt right here.
  fuse_req_interrupt_func(req, &RequestDispatcher::OnKernelInterrupt,
                          reinterpret_cast<void*>(static_cast<uintptr_t>(id)));
  QueuedIoctl call;
  call.id = id;
  call.handle = fi->fh;
  call.caller = CallerOf(req);
  call.cmd = cmd;
  call.arg = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(arg));
  call.reply.reset(new FuseIoctlReply(self->channel_, std::move(pending)));
  {
    MutexLock lock(self->lanes_mu_);
    UidLane& lane = self->lanes_[call.caller.uid];
    if (lane.busy >= kBusyThreadsPerUid) {
      // `in` points into libfuse's receive buffer, reused for the next
      // request: keep a copy.
      if (plan.in_size > 0) {
        const char* bytes = static_cast<const char*>(in);
        call.in.assign(bytes, bytes + plan.in_size);
      }
      // Set before the call is visible in the queue (a thread taking it
      // hands the reply to the handler, which may set its own callback).
      const uid_t uid = call.caller.uid;
      call.reply->OnInterrupt([self, uid, id] { self->CancelQueued(uid, id); });
      lane.queue.push_back(std::move(call));
      return;
    }
    lane.busy++;
  }
  // The common case: handled right here, `in` used in place (valid during
  // this call only).
  call.in.clear();
  QueuedIoctl first = std::move(call);
  const void* first_in = plan.in_size > 0 ? in : nullptr;
  self->handler_->Ioctl(first.handle, first.caller, first.cmd, first.arg, first_in,
                        plan.in_size, std::move(first.reply));
  first.reply.reset();
  self->RunLane(std::move(first));
}

void RequestDispatcher::RunLane(QueuedIoctl done) {
  // `done` was handled already; take the uid's queued ioctls in turn.
  const uid_t uid = done.caller.uid;
  for (;;) {
    QueuedIoctl next;
    {
      MutexLock lock(lanes_mu_);
      auto it = lanes_.find(uid);
      if (it == lanes_.end()) return;  // Disconnect() cleared the lanes
      UidLane& lane = it->second;
      if (lane.queue.empty() || loop_->stopping()) {
        // Left queued when stopping: Disconnect() answers them EIO.
        if (--lane.busy <= 0 && lane.queue.empty()) lanes_.erase(it);
        return;
      }
      next = std::move(lane.queue.front());
      lane.queue.pop_front();
    }
    if (next.reply->Cancelled()) {
      next.reply->ReplyError(EINTR);  // no-op if answered already
      continue;
    }
    handler_->Ioctl(next.handle, next.caller, next.cmd, next.arg,
                    next.in.empty() ? nullptr : next.in.data(), next.in.size(),
                    std::move(next.reply));
  }
}

void RequestDispatcher::CancelQueued(uid_t uid, uint64_t id) {
  std::unique_ptr<IoctlReply> reply;
  {
    MutexLock lock(lanes_mu_);
    auto it = lanes_.find(uid);
    if (it == lanes_.end()) return;
    auto& queue = it->second.queue;
    for (auto q = queue.begin(); q != queue.end(); ++q) {
      if (q->id != id) continue;
      reply = std::move(q->reply);
      queue.erase(q);
      break;
    }
  }
  // Not found: a thread took it meanwhile and the handler owns the reply
  // (Cancelled() tells it about the interrupt).
  if (reply) reply->ReplyError(EINTR);
}

size_t RequestDispatcher::queued_ioctls() const {
  MutexLock lock(lanes_mu_);
  size_t n = 0;
  for (const auto& entry : lanes_) n += entry.second.queue.size();
  return n;
}

void RequestDispatcher::OnPoll(fuse_req_t req, fuse_file_info* fi,
                               fuse_pollhandle* ph) {
  RequestDispatcher* self = From(req);
  std::unique_ptr<PollNotifier> notifier;
  // ph is null when the kernel only wants the current state (no
  // FUSE_POLL_SCHEDULE_NOTIFY).
  if (ph != nullptr) notifier.reset(new FusePollNotifier(self->channel_, ph));
  uint32_t revents = self->handler_->Poll(fi->fh, std::move(notifier));
  fuse_reply_poll(req, revents);
}

void RequestDispatcher::Disconnect() {
  // ECONNABORTED: what the kernel itself answers every request in flight
  // when a server dies (kill -9 aborts the connection), so a parked call
  // sees one errno however the daemon went away (docs/abi.md).
  for (auto& pending : channel_->TakeAll()) {
    channel_->Answer(pending.get(), [](fuse_req_t req) {
      fuse_reply_err(req, ECONNABORTED);
    });
  }
  channel_->Close();
  // Queued ioctls were among the pending ones (answered EIO above); their
  // reply objects do nothing now.
  std::unordered_map<uid_t, UidLane> lanes;
  {
    MutexLock lock(lanes_mu_);
    lanes.swap(lanes_);
  }
}

void RequestDispatcher::ReleaseRemaining() {
  std::unordered_map<uint64_t, int> remaining;
  {
    MutexLock lock(handles_mu_);
    remaining.swap(open_handles_);
  }
  for (const auto& entry : remaining) {
    for (int i = 0; i < entry.second; ++i) handler_->Release(entry.first);
  }
}

}  // namespace kqd
