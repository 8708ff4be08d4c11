#include "daemon/filters/fd/fd_readiness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <linux/tcp.h>  // not <netinet/tcp.h>: its tcp_info lacks tcpi_bytes_acked
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>

#include "daemon/util/scoped_fd.h"
#include "proto/kqueue_abi.h"

namespace kqd {
namespace {

// BSD fires a pipe's WRITE when an atomic write fits: PIPE_BUF bytes.
constexpr int64_t kPipeWriteLowat = PIPE_BUF;
// An eventfd counter's maximum (a write blocks past it).
constexpr uint64_t kEventfdMax = 0xfffffffffffffffeULL;
// tcpi_state values (the kernel's include/net/tcp_states.h; <linux/tcp.h>
// does not export them).
constexpr uint8_t kTcpClose = 7;
constexpr uint8_t kTcpListen = 10;

short Poll(int fd, short events) {
  pollfd p{fd, events, 0};
  if (poll(&p, 1, 0) != 1) return 0;
  return p.revents;
}

int64_t IoctlInt(int fd, unsigned long request) {
  int n = 0;
  if (ioctl(fd, request, &n) != 0) return -1;
  return n;
}

int SockOptInt(int fd, int level, int name, int fallback) {
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, level, name, &v, &len) != 0) return fallback;
  return v;
}

// Reads the magic link of our own copy: "anon_inode:[eventfd]" and so on.
bool ReadFdLink(int fd, char* buf, size_t size) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, buf, size - 1);
  if (n < 0) return false;
  buf[n] = '\0';
  return true;
}

// The eventfd counter from /proc/self/fdinfo ("eventfd-count: <hex>"):
// reading the fd itself would consume it.
bool EventfdCount(int fd, uint64_t* count) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  ScopedFd info(open(path, O_RDONLY | O_CLOEXEC));
  if (!info) return false;
  char buf[512];
  ssize_t n = read(info.get(), buf, sizeof buf - 1);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* p = strstr(buf, "eventfd-count:");
  if (p == nullptr) return false;
  *count = strtoull(p + strlen("eventfd-count:"), nullptr, 16);
  return true;
}

bool IsTcp(const FileInfo& info) {
  return (info.sock_domain == AF_INET || info.sock_domain == AF_INET6) &&
         info.sock_type == SOCK_STREAM && info.sock_protocol == IPPROTO_TCP;
}

bool IsStreamLike(const FileInfo& info) {
  return info.sock_type == SOCK_STREAM || info.sock_type == SOCK_SEQPACKET;
}

// The accept queue of an AF_UNIX listener, by inode, through sock_diag (its
// SIOCINQ is EINVAL). -1 if it cannot be had (e.g. the socket lives in
// another network namespace than the daemon).
int64_t UnixBacklog(ino_t ino) {
  ScopedFd nl(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl) return -1;
  struct {
    nlmsghdr h;
    unix_diag_req r;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST;
  req.r.sdiag_family = AF_UNIX;
  req.r.udiag_states = ~0u;
  req.r.udiag_ino = static_cast<uint32_t>(ino);
  req.r.udiag_show = UDIAG_SHOW_RQLEN;
  req.r.udiag_cookie[0] = req.r.udiag_cookie[1] = INET_DIAG_NOCOOKIE;
  sockaddr_nl to{};
  to.nl_family = AF_NETLINK;
  if (sendto(nl.get(), &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&to),
             sizeof to) < 0)
    return -1;
  alignas(nlmsghdr) char buf[4096];
  ssize_t n = recv(nl.get(), buf, sizeof buf, 0);
  if (n <= 0) return -1;
  int len = static_cast<int>(n);
  for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len);
       h = NLMSG_NEXT(h, len)) {
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) return -1;
    auto* msg = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
    int alen = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *msg));
    for (auto* a = reinterpret_cast<rtattr*>(msg + 1); RTA_OK(a, alen);
         a = RTA_NEXT(a, alen)) {
      if (a->rta_type == UNIX_DIAG_RQLEN) {
        // For a listener, rqueue is sk_ack_backlog.
        return static_cast<unix_diag_rqlen*>(RTA_DATA(a))->udiag_rqueue;
      }
    }
  }
  return -1;
}

int64_t ListenBacklog(int fd, const FileInfo& info, short revents) {
  if (IsTcp(info)) {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    // For a listener the kernel puts sk_ack_backlog in tcpi_unacked.
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) return ti.tcpi_unacked;
  } else if (info.sock_domain == AF_UNIX) {
    int64_t n = UnixBacklog(info.id.ino);
    if (n >= 0) return n;
  }
  return (revents & POLLIN) ? 1 : 0;  // at least one connection waits
}

// See the header: never getsockopt(SO_ERROR), which would consume the error.
uint32_t GuessSocketError(int fd, const FileInfo& info) {
  if (IsTcp(info)) {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
      if (ti.tcpi_rtt == 0) return ECONNREFUSED;  // never got an answer
      if (ti.tcpi_retransmits > 0 || ti.tcpi_probes > 0) return ETIMEDOUT;
    }
    return ECONNRESET;
  }
  if (info.sock_domain == AF_UNIX) return ECONNRESET;
  if (!IsStreamLike(info)) return ECONNREFUSED;
  return EIO;
}

// The low-water mark a knote asks for, else `fallback`.
int64_t Lowat(uint32_t sfflags, int64_t sdata, int64_t fallback) {
  return (sfflags & NOTE_LOWAT) ? sdata : fallback;
}

// The revents the caller knows (KnownPoll::revents), else poll's answer.
short PollOrKnown(int fd, short events, const KnownPoll& known) {
  if (known.revents >= 0) return static_cast<short>(known.revents);
  return Poll(fd, events);
}

Readiness SocketRead(int fd, const FileInfo& info, uint32_t sfflags,
                     int64_t sdata, const KnownPoll& known) {
  Readiness r;
  const short rev = PollOrKnown(fd, POLLIN | POLLRDHUP | POLLPRI, known);
  // Datagram and raw sockets cannot listen (listen(2): EOPNOTSUPP): no
  // need to ask.
  const bool may_listen = info.sock_type != SOCK_DGRAM && info.sock_type != SOCK_RAW;
  if (may_listen && SockOptInt(fd, SOL_SOCKET, SO_ACCEPTCONN, 0)) {
    r.data = ListenBacklog(fd, info, rev);
    r.fire = r.data > 0 && r.data >= Lowat(sfflags, sdata, 1);
    return r;
  }
  // A stream socket that is not connected: Linux says POLLHUP alone.
  if (IsStreamLike(info) && (rev & POLLHUP) && !(rev & (POLLRDHUP | POLLERR)))
    return r;
  r.data = std::max<int64_t>(0, IoctlInt(fd, SIOCINQ));
  r.eof = (rev & POLLRDHUP) != 0;
  const bool error = (rev & POLLERR) != 0;
  if (r.eof && error) r.fflags = GuessSocketError(fd, info);
  bool enough;
  if (info.sock_type == SOCK_STREAM) {
    // SO_RCVLOWAT is asked only when it decides: bytes are there and the
    // knote set no NOTE_LOWAT (an empty socket's re-check spares it).
    enough = r.data > 0 &&
             r.data >= ((sfflags & NOTE_LOWAT)
                            ? sdata
                            : std::max(1, SockOptInt(fd, SOL_SOCKET, SO_RCVLOWAT, 1)));
  } else {
    // Messages: a queued (even empty) message makes the socket readable.
    enough = (rev & POLLIN) && r.data >= Lowat(sfflags, sdata, 0);
  }
  r.fire = r.eof || error || enough;
  return r;
}

Readiness SocketWrite(int fd, const FileInfo& info, uint32_t sfflags,
                      int64_t sdata) {
  Readiness r;
  // POLLRDHUP must be asked for to be told (the not-connected test below).
  const short rev = Poll(fd, POLLOUT | POLLRDHUP);
  // Not connected, or a listener: never writable (BSD: PR_CONNREQUIRED).
  if (IsStreamLike(info) && (rev & POLLHUP) && !(rev & (POLLRDHUP | POLLERR)))
    return r;
  if (SockOptInt(fd, SOL_SOCKET, SO_ACCEPTCONN, 0)) return r;
  const int64_t sndbuf = SockOptInt(fd, SOL_SOCKET, SO_SNDBUF, 0);
  const int64_t queued = std::max<int64_t>(0, IoctlInt(fd, SIOCOUTQ));
  r.data = std::max<int64_t>(0, sndbuf - queued);
  r.eof = (rev & POLLHUP) != 0;
  const bool error = (rev & POLLERR) != 0;
  if (r.eof && error) r.fflags = GuessSocketError(fd, info);
  const bool enough = (rev & POLLOUT) && r.data > 0 &&
                      r.data >= Lowat(sfflags, sdata, 1);
  r.fire = r.eof || error || enough;
  return r;
}

Readiness PipeRead(int fd, const FileInfo& info, uint32_t sfflags, int64_t sdata,
                   const KnownPoll& known) {
  Readiness r;
  if (info.id.accmode != O_WRONLY && known.revents < 0 && known.hup >= 0) {
    // The hang-up state is known (KnownPoll::hup): FIONREAD alone tells the
    // rest, as bytes buffered is exactly what makes a pipe poll POLLIN.
    r.data = std::max<int64_t>(0, IoctlInt(fd, FIONREAD));
    r.eof = known.hup != 0;
    r.hup = known.hup;
    r.fire = r.eof || (r.data > 0 && r.data >= Lowat(sfflags, sdata, 1));
    return r;
  }
  const short rev = PollOrKnown(fd, POLLIN, known);
  if (info.id.accmode == O_WRONLY) {
    // The write end (NetBSD's filt_piperead finds no peer): nothing to read
    // ever, but EV_EOF once the last reader is gone (POLLERR), data 0.
    r.eof = (rev & POLLERR) != 0;
    r.fire = r.eof;
    return r;
  }
  // A pipe polls POLLIN exactly when it holds data: an empty one needs no
  // FIONREAD (the level re-check of a drained pipe costs one syscall less).
  r.data = (rev & POLLIN) ? std::max<int64_t>(0, IoctlInt(fd, FIONREAD)) : 0;
  r.eof = (rev & POLLHUP) != 0;
  r.hup = r.eof ? 1 : 0;
  r.fire = r.eof || (r.data > 0 && r.data >= Lowat(sfflags, sdata, 1));
  return r;
}

Readiness PipeWrite(int fd, const FileInfo& info, uint32_t sfflags, int64_t sdata,
                    const KnownPoll& known) {
  Readiness r;
  const short rev = PollOrKnown(fd, POLLOUT, known);
  if (info.id.accmode == O_RDONLY) {
    // The read end: never writable, but EV_EOF once the last writer is
    // gone (POLLHUP), data 0 — as NetBSD's filt_pipewrite, which finds no
    // peer then.
    r.eof = (rev & POLLHUP) != 0;
    r.fire = r.eof;
    return r;
  }
  if (rev & POLLERR) {  // no reader left
    r.eof = true;
    r.fire = true;
    return r;
  }
  const int64_t size = fcntl(fd, F_GETPIPE_SZ);
  const int64_t used = std::max<int64_t>(0, IoctlInt(fd, FIONREAD));
  r.data = std::max<int64_t>(0, size - used);
  // POLLOUT as well: Linux counts whole pages, so a pipe of many tiny
  // writes can be full while bytes remain.
  r.fire = (rev & POLLOUT) && r.data > 0 &&
           r.data >= Lowat(sfflags, sdata, kPipeWriteLowat);
  return r;
}

Readiness RegularRead(int fd, uint32_t sfflags, int64_t sdata) {
  Readiness r;
  struct stat st;
  off_t offset = lseek(fd, 0, SEEK_CUR);
  if (fstat(fd, &st) != 0 || offset < 0) return r;
  r.data = std::max<int64_t>(0, static_cast<int64_t>(st.st_size) - offset);
  r.fire = r.data > 0 && r.data >= Lowat(sfflags, sdata, 1);
  return r;
}

Readiness EventfdRead(int fd, uint32_t sfflags, int64_t sdata) {
  Readiness r;
  uint64_t count = 0;
  if (!EventfdCount(fd, &count)) return r;
  r.data = static_cast<int64_t>(count);
  r.fire = count > 0 && r.data >= Lowat(sfflags, sdata, 1);
  return r;
}

Readiness EventfdWrite(int fd, uint32_t sfflags, int64_t sdata) {
  Readiness r;
  uint64_t count = 0;
  if (!EventfdCount(fd, &count)) return r;
  // Room left, as an unsigned count (it exceeds INT64_MAX when the counter
  // is small): compare it unsigned too.
  const uint64_t room = kEventfdMax - std::min(count, kEventfdMax);
  r.data = static_cast<int64_t>(room);
  r.fire = room > 0 && (!(sfflags & NOTE_LOWAT) || sdata <= 0 ||
                        room >= static_cast<uint64_t>(sdata));
  return r;
}

// ttys and other pollable files: poll decides, data is what FIONREAD says.
Readiness GenericRead(int fd, uint32_t sfflags, int64_t sdata) {
  Readiness r;
  const short rev = Poll(fd, POLLIN | POLLPRI);
  r.data = std::max<int64_t>(0, IoctlInt(fd, FIONREAD));
  r.eof = (rev & POLLHUP) != 0;
  const bool readable = (rev & (POLLIN | POLLPRI)) != 0;
  r.fire = r.eof || (readable && r.data >= Lowat(sfflags, sdata, 0));
  return r;
}

Readiness GenericWrite(int fd) {
  Readiness r;
  const short rev = Poll(fd, POLLOUT);
  r.eof = (rev & POLLHUP) != 0;
  r.fire = r.eof || (rev & (POLLOUT | POLLERR)) != 0;
  return r;
}

}  // namespace

// DescribeFile's second half: the kind of file out->id names.
static int Classify(int fd, FileInfo* out);

bool PipePeerGone(int fd, const FileInfo& info) {
  if (info.id.accmode == O_RDONLY) return (Poll(fd, POLLIN) & POLLHUP) != 0;
  return (Poll(fd, POLLOUT) & POLLERR) != 0;
}

int DescribeFile(int fd, FileInfo* out) {
  if (int err = ReadIdentity(fd, &out->id)) return err;
  return Classify(fd, out);
}

int DescribeFile(int fd, const struct statx& stx, FileInfo* out) {
  if (int err = IdentityFromStatx(fd, stx, &out->id)) return err;
  return Classify(fd, out);
}

static int Classify(int fd, FileInfo* out) {
  switch (out->id.type) {
    case S_IFIFO:
      out->kind = FileKind::kPipe;
      return 0;
    case S_IFSOCK:
      out->kind = FileKind::kSocket;
      out->sock_domain = SockOptInt(fd, SOL_SOCKET, SO_DOMAIN, 0);
      out->sock_type = SockOptInt(fd, SOL_SOCKET, SO_TYPE, 0);
      out->sock_protocol = SockOptInt(fd, SOL_SOCKET, SO_PROTOCOL, 0);
      return 0;
    case S_IFDIR:
      out->kind = FileKind::kRegular;
      return 0;
    case S_IFCHR: {
      termios t;
      out->kind = tcgetattr(fd, &t) == 0 ? FileKind::kTty : FileKind::kPollable;
      return 0;
    }
    case S_IFREG:
    case 0: {
      // Anonymous inodes (eventfd, timerfd, pidfd...) have no type bits or,
      // on some kernels, S_IFREG: their link names them.
      char link[128];
      if (ReadFdLink(fd, link, sizeof link) && strncmp(link, "anon_inode:", 11) == 0) {
        out->kind = strcmp(link, "anon_inode:[eventfd]") == 0 ? FileKind::kEventfd
                                                              : FileKind::kPollable;
      } else {
        out->kind = out->id.type == S_IFREG ? FileKind::kRegular : FileKind::kPollable;
      }
      return 0;
    }
    default:
      out->kind = FileKind::kPollable;
      return 0;
  }
}

SendQueue ReadSendQueue(int fd, const FileInfo& info) {
  SendQueue q;
  q.drains_silently = info.sock_domain != AF_UNIX && IsStreamLike(info);
  if (IsTcp(info)) {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
      // Reset or closed: what was never acknowledged never will be, and BSD
      // drops it from the send buffer (soisdisconnected). Linux keeps
      // write_seq - snd_una in SIOCOUTQ.
      if (ti.tcpi_state == kTcpClose || ti.tcpi_state == kTcpListen) return q;
      // Older kernels return a shorter structure.
      if (len >= offsetof(tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked)
        q.acked = ti.tcpi_bytes_acked;
    }
  }
  // -1: no SIOCOUTQ for this socket (e.g. a TCP listener): nothing queued.
  q.bytes = std::max<int64_t>(0, IoctlInt(fd, SIOCOUTQ));
  return q;
}

Readiness ReadReadiness(int fd, const FileInfo& info, uint32_t sfflags,
                        int64_t sdata, const KnownPoll& known) {
  switch (info.kind) {
    case FileKind::kPipe:
      return PipeRead(fd, info, sfflags, sdata, known);
    case FileKind::kSocket:
      return SocketRead(fd, info, sfflags, sdata, known);
    case FileKind::kEventfd:
      return EventfdRead(fd, sfflags, sdata);
    case FileKind::kRegular:
      return RegularRead(fd, sfflags, sdata);
    case FileKind::kUnpollable: {
      Readiness r;
      r.fire = true;
      return r;
    }
    case FileKind::kTty:
    case FileKind::kPollable:
      break;
  }
  return GenericRead(fd, sfflags, sdata);
}

Readiness WriteReadiness(int fd, const FileInfo& info, uint32_t sfflags,
                         int64_t sdata, const KnownPoll& known) {
  switch (info.kind) {
    case FileKind::kPipe:
      return PipeWrite(fd, info, sfflags, sdata, known);
    case FileKind::kSocket:
      return SocketWrite(fd, info, sfflags, sdata);
    case FileKind::kEventfd:
      return EventfdWrite(fd, sfflags, sdata);
    case FileKind::kRegular:
    case FileKind::kUnpollable: {
      Readiness r;
      r.fire = true;
      return r;
    }
    case FileKind::kTty:
    case FileKind::kPollable:
      break;
  }
  return GenericWrite(fd);
}

}  // namespace kqd
