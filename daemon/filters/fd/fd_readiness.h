// What EVFILT_READ / EVFILT_WRITE report for one file: its identity (to
// notice that a client's fd number was closed or now names another file)
// and, per file type, the BSD data / EV_EOF / fflags computed from a
// transient daemon-side copy of the client's descriptor.
//
// Everything here works on a descriptor the caller holds for a moment and
// closes: nothing keeps the client's file open.
//
// Per type (bsd-semantics.md "Per-filter data"; deviations marked *):
//   pipe/FIFO  READ  data = bytes buffered (FIONREAD); EV_EOF when no writer
//                    is left (POLLHUP). On a write-only end: fires only
//                    with EV_EOF, data 0, once no reader is left (POLLERR),
//                    as NetBSD's filt_piperead (asyncio watches its write
//                    ends so).
//              WRITE data = free space (F_GETPIPE_SZ - FIONREAD, FIONREAD
//                    works on either end); fires at >= PIPE_BUF (Linux's
//                    4096: the atomic write size, as BSD's 512 is there);
//                    reader gone: EV_EOF, data 0 (POLLERR). On a read-only
//                    end: fires only with EV_EOF, data 0, once no writer is
//                    left (POLLHUP), as NetBSD's filt_pipewrite.
//   socket     READ  data = bytes in the receive queue (SIOCINQ), against
//                    NOTE_LOWAT or else SO_RCVLOWAT; *datagram sockets:
//                    Linux only tells the size of the next datagram, not
//                    the bytes of all of them, and an empty datagram fires
//                    with data 0. Listening socket: data = accept queue
//                    length (TCP: TCP_INFO tcpi_unacked, which is
//                    sk_ack_backlog for a listener; AF_UNIX: sock_diag).
//                    EV_EOF when the peer shut down (POLLRDHUP).
//              WRITE data = SO_SNDBUF - SIOCOUTQ; EV_EOF when sending is
//                    over (POLLHUP). An unconnected stream socket (Linux
//                    says POLLHUP alone) fires neither, as on BSD.
//              fflags with EV_EOF: the socket error. *It is inferred, not
//                    read: getsockopt(SO_ERROR) would clear the error, so the
//                    client's own read() or SO_ERROR after a non-blocking
//                    connect would no longer see it. POLLERR says an error is
//                    pending; TCP_INFO tells which of ECONNREFUSED (never
//                    connected: no RTT sample), ETIMEDOUT (retransmitting)
//                    and ECONNRESET it most likely is; AF_UNIX gives
//                    ECONNRESET, other datagram sockets ECONNREFUSED.
//   tty/pty    READ  data = FIONREAD; EV_EOF on hang-up. WRITE fires when
//                    writable, *data 0 (Linux does not expose the free
//                    output space).
//   eventfd    READ  data = the counter (NetBSD's eventfd does the same),
//                    read from /proc/self/fdinfo without consuming it.
//              WRITE data = 0xfffffffffffffffe - counter.
//   regular file / directory
//              READ  data = size - offset (offset of the client's open file
//                    description, shared with the copy), fires when > 0
//                    (*never negative: a file truncated below the offset
//                    gives 0). WRITE is always ready, data 0.
//   anything else epoll accepts (timerfd, inotify, signalfd...): fires on
//                    POLLIN / POLLOUT, data = FIONREAD where it works, else 0.
//   files epoll refuses (e.g. /dev/null, block devices): always ready,
//                    data 0, as BSD's seltrue.
//
// EVFILT_EMPTY (sockets only, see ReadSendQueue): what is still in the
// send queue, which is what FreeBSD's sbused(&so->so_snd) counts.
#ifndef KQUEUED_DAEMON_FILTERS_FD_FD_READINESS_H_
#define KQUEUED_DAEMON_FILTERS_FD_FD_READINESS_H_

#include <sys/types.h>

#include <cstdint>

#include "daemon/os/file_identity.h"

namespace kqd {

enum class FileKind {
  kPipe,        // pipe or FIFO
  kSocket,
  kTty,         // terminal or pty (either side)
  kEventfd,
  kRegular,     // regular file or directory: size - offset, inotify-driven
  kPollable,    // any other file epoll accepts
  kUnpollable,  // epoll refuses it: always ready
};

struct FileInfo {
  FileIdentity id;
  FileKind kind = FileKind::kPollable;
  // Sockets only (fixed for a socket's life).
  int sock_domain = 0;
  int sock_type = 0;
  int sock_protocol = 0;
};

// Identity plus classification, once at Attach. 0 or an errno. kUnpollable
// is never returned: the caller learns it from epoll (EPERM).
int DescribeFile(int fd, FileInfo* out);
// The same from a statx of `fd` already read (ProcessContext::DupFdStat).
int DescribeFile(int fd, const struct statx& stx, FileInfo* out);

// For a pipe (kPipe): whether the other side of `fd` is gone — no reader
// left for a write end, no writer left for a read end.
bool PipePeerGone(int fd, const FileInfo& info);

// What one evaluation found.
struct Readiness {
  bool fire = false;
  int64_t data = 0;
  bool eof = false;
  uint32_t fflags = 0;
  // Pipe or FIFO EVFILT_READ on an end open for reading: the hang-up state
  // found (by poll, or as KnownPoll::hup said), for the next evaluation's
  // KnownPoll::hup. -1 for other files.
  int hup = -1;
};

// What the caller already knows of the file's poll state, so that the
// evaluation need not ask the kernel again. Each is used only where it
// answers exactly what the evaluation's own poll() would.
struct KnownPoll {
  // The revents of the filter's epoll item taken just now, by the
  // epoll_wait that drained the item's add report (FdWatcher::Watch): the
  // kernel polls the file for the item's events at that epoll_wait, and an
  // item it does not report is not ready. -1: unknown. Used by pipes
  // (either filter) and sockets (EVFILT_READ), whose items ask for the
  // events their poll() asks for.
  int revents = -1;
  // Pipe or FIFO EVFILT_READ on an end open for reading: whether the last
  // full evaluation found it hung up (no writer left), when no wake-up of
  // the file has happened since that the caller has not evaluated. -1:
  // unknown. Every change of that state (the last writer's close, a FIFO
  // writer's open) wakes the pipe's readers, so the caller's epoll item
  // hears of it and the wake-up is evaluated (for a collection, by the
  // catch-up before the scan): then the evaluation needs FIONREAD alone.
  int hup = -1;
};

// sfflags / sdata: the knote's saved fflags (NOTE_LOWAT) and data (the
// low-water mark).
Readiness ReadReadiness(int fd, const FileInfo& info, uint32_t sfflags,
                        int64_t sdata, const KnownPoll& known = KnownPoll());
Readiness WriteReadiness(int fd, const FileInfo& info, uint32_t sfflags,
                         int64_t sdata, const KnownPoll& known = KnownPoll());

// What is left in a socket's send queue, for EVFILT_EMPTY.
struct SendQueue {
  // Bytes not yet sent or not yet acknowledged (SIOCOUTQ): TCP counts
  // write_seq - snd_una (a FIN counts one until acknowledged); AF_UNIX and
  // UDP count the memory of what the peer has not read / the device has
  // not sent yet. 0 for a listener, a TCP connection that was reset or
  // closed (BSD flushes the send buffer then; Linux leaves snd_una behind),
  // and families without SIOCOUTQ.
  int64_t bytes = 0;
  // TCP: bytes ever acknowledged (tcpi_bytes_acked), which tells that the
  // queue drained between two looks; 0 elsewhere.
  uint64_t acked = 0;
  // Linux wakes nobody when this queue drains: stream sockets other than
  // AF_UNIX wake writers only when a full buffer regains room
  // (sk_stream_write_space needs SOCK_NOSPACE). AF_UNIX and datagram
  // sockets wake their writer whenever sent memory is freed.
  bool drains_silently = false;
};

// `info` must describe a socket.
SendQueue ReadSendQueue(int fd, const FileInfo& info);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_FD_FD_READINESS_H_
