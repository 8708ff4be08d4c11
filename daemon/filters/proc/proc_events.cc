#include "daemon/filters/proc/proc_events.h"

#include <errno.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <future>
#include <utility>

namespace kqd {
namespace {

// The receive buffer asked for (SO_RCVBUFFORCE; the kernel doubles it for
// its bookkeeping). Each event costs well under 1 KiB of it, so this holds
// some ten thousand events: a fork storm while the loop is busy, not a
// steady state. Only what is queued uses memory.
constexpr int kReceiveBuffer = 8 << 20;

// Datagrams read per reactor callback before yielding to other sources.
constexpr size_t kBatch = 1024;

// Datagrams read on after an overflow, to empty the queue before the
// subscribers resynchronise: more than kReceiveBuffer can hold.
constexpr size_t kOverflowDrain = 65536;

// How long Create waits for the kernel to acknowledge PROC_CN_MCAST_LISTEN.
// The kernel answers synchronously, inside our send(): the ack is normally
// there at once; no ack at all means we are in a namespace it ignores.
constexpr int kAckTimeoutMs = 100;

// One connector message: netlink header, cn_msg, payload.
size_t PayloadOffset() { return NLMSG_LENGTH(sizeof(cn_msg)); }

// Whether we can be in the initial user namespace, whose uid map is always
// the whole identity ("0 0 4294967295"). Anywhere else the kernel ignores
// the listen request without a word: no need to wait for an ack to know.
// (A container may map everything too: then the ack wait decides.)
bool MaybeInitialUserNamespace() {
  FILE* f = std::fopen("/proc/self/uid_map", "re");
  if (!f) return true;  // no /proc: let the ack decide
  unsigned long inside = 1, outside = 1, count = 0;
  int fields = std::fscanf(f, "%lu %lu %lu", &inside, &outside, &count);
  std::fclose(f);
  return fields == 3 && inside == 0 && outside == 0 && count == 4294967295ul;
}

}  // namespace

std::shared_ptr<ProcEvents> ProcEvents::Create(Reactor* reactor, int* error) {
  if (!MaybeInitialUserNamespace()) {
    *error = EPERM;
    return nullptr;
  }
  ScopedFd sock(socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                       NETLINK_CONNECTOR));
  if (!sock) {
    *error = errno;
    return nullptr;
  }
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = CN_IDX_PROC;
  addr.nl_pid = 0;  // the kernel picks a unique port id
  if (bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *error = errno;
    return nullptr;
  }
  // FORCE passes rmem_max (root only); without privilege fall back to the
  // ordinary option, capped by rmem_max.
  int size = kReceiveBuffer;
  if (setsockopt(sock.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    setsockopt(sock.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);

  std::shared_ptr<ProcEvents> self(new ProcEvents(reactor, std::move(sock)));
  // A number of our own identifies our ack among others': acks are
  // multicast to every listener of the group.
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  // (Kept well below INT_MAX: the kernel adds 1 to it as an int.)
  const uint32_t nonce =
      ((static_cast<uint32_t>(now.tv_nsec) ^ static_cast<uint32_t>(getpid())) & 0x3fffffff) | 1;
  int err = self->SendControl(true, nonce);
  if (err == 0) err = self->AwaitAck(nonce);
  if (err == 0) err = self->StartReading();
  if (err != 0) {
    *error = err;
    return nullptr;
  }
  *error = 0;
  return self;
}

ProcEvents::ProcEvents(Reactor* reactor, ScopedFd sock)
    : reactor_(reactor),
      sock_(std::move(sock)),
      subscribers_(std::make_shared<const Subscribers>()) {}

ProcEvents::~ProcEvents() {
  StopReading();
  // Kernels before 6.6 count listeners globally and only an explicit IGNORE
  // decrements the count; later ones also do it when the socket closes.
  // Only a listen the kernel acknowledged is undone (an unbalanced IGNORE
  // would turn events off for other listeners on old kernels).
  if (listening_) SendControl(false, 0);
}

int ProcEvents::SendControl(bool listen, uint32_t nonce) {
  alignas(nlmsghdr) char buf[NLMSG_SPACE(sizeof(cn_msg) + sizeof(uint32_t))] = {};
  auto* h = reinterpret_cast<nlmsghdr*>(buf);
  h->nlmsg_len = NLMSG_LENGTH(sizeof(cn_msg) + sizeof(uint32_t));
  h->nlmsg_type = NLMSG_DONE;
  cn_msg msg{};
  msg.id.idx = CN_IDX_PROC;
  msg.id.val = CN_VAL_PROC;
  // The kernel's ack carries our ack number + 1 (its seq varies by kernel
  // version: ours, or a counter of its own).
  msg.seq = 0;
  msg.ack = nonce;
  msg.len = sizeof(uint32_t);
  const uint32_t op = listen ? PROC_CN_MCAST_LISTEN : PROC_CN_MCAST_IGNORE;
  std::memcpy(NLMSG_DATA(h), &msg, sizeof msg);
  std::memcpy(buf + PayloadOffset(), &op, sizeof op);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t n = sendto(sock_.get(), buf, h->nlmsg_len, 0,
                     reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
  return n < 0 ? errno : 0;
}

int ProcEvents::AwaitAck(uint32_t nonce) {
  timespec start{};
  clock_gettime(CLOCK_MONOTONIC, &start);
  alignas(nlmsghdr) char buf[4096];
  for (;;) {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    long elapsed_ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
    if (elapsed_ms >= kAckTimeoutMs) return ETIMEDOUT;
    pollfd p{sock_.get(), POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(kAckTimeoutMs - elapsed_ms));
    if (r < 0 && errno != EINTR) return errno;
    if (r <= 0) continue;
    sockaddr_nl from{};
    socklen_t fromlen = sizeof from;
    ssize_t n = recvfrom(sock_.get(), buf, sizeof buf, MSG_DONTWAIT,
                         reinterpret_cast<sockaddr*>(&from), &fromlen);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == ENOBUFS) continue;
      return errno;
    }
    if (from.nl_pid != 0) continue;
    // Anything else that arrives first (other processes' events, other
    // listeners' acks) predates every knote: drop it.
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_len < PayloadOffset() + offsetof(proc_event, event_data) + sizeof(uint32_t))
        continue;
      cn_msg msg;
      std::memcpy(&msg, NLMSG_DATA(h), sizeof msg);
      if (msg.id.idx != CN_IDX_PROC || msg.id.val != CN_VAL_PROC) continue;
      if (msg.ack != nonce + 1) continue;
      proc_event ev{};
      std::memcpy(&ev, reinterpret_cast<char*>(h) + PayloadOffset(),
                  std::min<size_t>(msg.len, sizeof ev));
      if (ev.what != proc_event::PROC_EVENT_NONE) continue;
      if (ev.event_data.ack.err != 0) return static_cast<int>(ev.event_data.ack.err);
      listening_ = true;
      return 0;
    }
  }
}

int ProcEvents::StartReading() {
  if (token_ > 0) return 0;
  std::weak_ptr<ProcEvents> weak = weak_from_this();
  int64_t token = reactor_->AddFd(sock_.get(), EPOLLIN, [weak](uint32_t) {
    if (auto self = weak.lock()) self->OnReadable();
  });
  if (token < 0) return static_cast<int>(-token);
  token_ = token;
  return 0;
}

void ProcEvents::StopReading() {
  if (token_ <= 0) return;
  reactor_->RemoveFd(sock_.get(), token_);
  token_ = 0;
}

uint64_t ProcEvents::Subscribe(Listener on_event, OverflowListener on_overflow) {
  MutexLock l(mu_);
  auto next = std::make_shared<Subscribers>(*subscribers_);
  const uint64_t id = next_id_++;
  next->push_back(Subscriber{id, std::move(on_event), std::move(on_overflow)});
  subscribers_ = std::move(next);
  return id;
}

void ProcEvents::Unsubscribe(uint64_t id) {
  MutexLock l(mu_);
  auto next = std::make_shared<Subscribers>(*subscribers_);
  next->erase(std::remove_if(next->begin(), next->end(),
                             [id](const Subscriber& s) { return s.id == id; }),
              next->end());
  subscribers_ = std::move(next);
}

std::shared_ptr<const ProcEvents::Subscribers> ProcEvents::snapshot() const {
  MutexLock l(mu_);
  return subscribers_;
}

uint64_t ProcEvents::overflows() const { return overflows_.load(); }

void ProcEvents::OnReadable() {
  if (paused_) return;
  // A catch-up leaves nothing behind (see Reactor::CatchUp).
  ReadSome(Reactor::CatchingUp() ? SIZE_MAX : kBatch);
}

void ProcEvents::Drain() {
  if (paused_ || reading_) return;
  ReadSome(SIZE_MAX);
}

void ProcEvents::ReadSome(size_t max) {
  reading_ = true;
  bool overflow = false;
  alignas(nlmsghdr) char buf[16384];
  // After an overflow, read on past `max` to the end of the queue: the
  // subscribers' resynchronisation must come after every event still queued
  // (an exit they would otherwise take for lost, for one). Bounded by more
  // than the buffer holds, so a storm that refills it as fast as we read
  // cannot hold the loop forever.
  for (size_t i = 0; i < max || (overflow && i - max < kOverflowDrain); i++) {
    sockaddr_nl from{};
    socklen_t fromlen = sizeof from;
    ssize_t n = recvfrom(sock_.get(), buf, sizeof buf, MSG_DONTWAIT,
                         reinterpret_cast<sockaddr*>(&from), &fromlen);
    if (n < 0) {
      if (errno == EINTR) continue;
      // The kernel dropped events for want of buffer space; what is still
      // queued is valid and is read on. Subscribers resynchronise once the
      // queue is empty, so they see the stream up to now first.
      if (errno == ENOBUFS) {
        overflow = true;
        continue;
      }
      if (errno != EAGAIN)
        std::fprintf(stderr, "kqueued: proc connector: recv: %s\n", std::strerror(errno));
      break;
    }
    // Only the kernel speaks on this group (a user process cannot send to
    // it without CAP_NET_ADMIN); never trust anything else.
    if (from.nl_pid != 0) continue;
    Parse(buf, static_cast<size_t>(n));
  }
  reading_ = false;
  if (overflow) {
    overflows_++;
    NotifyOverflow();
  }
}

void ProcEvents::Parse(const char* buf, size_t n) {
  int len = static_cast<int>(n);
  for (auto* h = reinterpret_cast<const nlmsghdr*>(buf); NLMSG_OK(h, len);
       h = NLMSG_NEXT(h, len)) {
    if (h->nlmsg_type == NLMSG_ERROR || h->nlmsg_type == NLMSG_NOOP) continue;
    if (h->nlmsg_len < PayloadOffset()) continue;
    cn_msg msg;
    std::memcpy(&msg, NLMSG_DATA(h), sizeof msg);
    if (msg.id.idx != CN_IDX_PROC || msg.id.val != CN_VAL_PROC) continue;
    const size_t avail = h->nlmsg_len - PayloadOffset();
    const size_t size = std::min<size_t>({msg.len, avail, sizeof(proc_event)});
    // The payload follows a 20-byte cn_msg: copy it out rather than read a
    // misaligned struct in place.
    proc_event pe{};
    std::memcpy(&pe, reinterpret_cast<const char*>(h) + PayloadOffset(), size);
    const size_t head = offsetof(proc_event, event_data);
    ProcEvent ev{};
    ev.timestamp_ns = pe.timestamp_ns;
    switch (pe.what) {
      case proc_event::PROC_EVENT_FORK:
        if (size < head + sizeof pe.event_data.fork) continue;
        ev.kind = ProcEvent::Kind::kFork;
        ev.pid = pe.event_data.fork.parent_pid;
        ev.tgid = pe.event_data.fork.parent_tgid;
        ev.child_pid = pe.event_data.fork.child_pid;
        ev.child_tgid = pe.event_data.fork.child_tgid;
        break;
      case proc_event::PROC_EVENT_EXEC:
        if (size < head + sizeof pe.event_data.exec) continue;
        ev.kind = ProcEvent::Kind::kExec;
        ev.pid = pe.event_data.exec.process_pid;
        ev.tgid = pe.event_data.exec.process_tgid;
        break;
      case proc_event::PROC_EVENT_EXIT:
        // Only the fields up to exit_signal are needed (older kernels sent
        // no parent fields).
        if (size < offsetof(proc_event, event_data.exit.parent_pid)) continue;
        ev.kind = ProcEvent::Kind::kExit;
        ev.pid = pe.event_data.exit.process_pid;
        ev.tgid = pe.event_data.exit.process_tgid;
        // task->exit_code: already wait(2)-style (code << 8, or the signal
        // number with 0x80 for a core dump).
        ev.exit_status = static_cast<int>(pe.event_data.exit.exit_code);
        break;
      case proc_event::PROC_EVENT_UID:
      case proc_event::PROC_EVENT_GID:
        if (size < head + sizeof pe.event_data.id) continue;
        ev.kind = pe.what == proc_event::PROC_EVENT_UID ? ProcEvent::Kind::kUid
                                                        : ProcEvent::Kind::kGid;
        ev.pid = pe.event_data.id.process_pid;
        ev.tgid = pe.event_data.id.process_tgid;
        ev.real_id = pe.event_data.id.r.ruid;       // rgid for kGid (a union)
        ev.effective_id = pe.event_data.id.e.euid;  // egid for kGid
        break;
      default:
        continue;  // acks, sid/ptrace/comm/coredump: not ours
    }
    Dispatch(ev);
  }
}

void ProcEvents::Dispatch(const ProcEvent& ev) {
  std::shared_ptr<const Subscribers> subs = snapshot();
  for (const Subscriber& s : *subs) {
    if (s.on_event) s.on_event(ev);
  }
}

void ProcEvents::NotifyOverflow() {
  std::shared_ptr<const Subscribers> subs = snapshot();
  for (const Subscriber& s : *subs) {
    if (s.on_overflow) s.on_overflow();
  }
}

void ProcEvents::RunOnReactor(std::function<void()> fn) {
  std::promise<void> done;
  std::future<void> finished = done.get_future();
  reactor_->Post([&fn, &done] {
    fn();
    done.set_value();
  });
  finished.wait();
}

void ProcEvents::PauseForTesting(bool paused) {
  RunOnReactor([this, paused] {
    paused_ = paused;
    if (paused) {
      StopReading();
    } else {
      StartReading();
      ReadSome(SIZE_MAX);
    }
  });
}

int ProcEvents::SetReceiveBufferForTesting(int bytes) {
  if (setsockopt(sock_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
    return errno;
  return 0;
}

void ProcEvents::InjectOverflowForTesting() {
  RunOnReactor([this] {
    if (!paused_) ReadSome(SIZE_MAX);
    overflows_++;
    NotifyOverflow();
  });
}

}  // namespace kqd
