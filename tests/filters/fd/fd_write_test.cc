// EVFILT_WRITE on file descriptors: free space in pipes and sockets, the
// PIPE_BUF threshold, EV_EOF when the reader is gone or the connection was
// reset or refused, and the files that are always (or never) writable.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/util/scoped_fd.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"
#include "tests/support/fd_test_util.h"

namespace {

using kqd::ScopedFd;
using kqd::testing::Ev;
using kqd::testing::Pipe;
using kqd::testing::TcpListener;
using kqd::testing::TcpPair;
using kqd::testing::WaitEvent;
using kqd::testing::WriteBytes;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;

// Waits for an event on (ident, filter) with EV_EOF set.
std::optional<kq_kevent> WaitEof(TestQueue& q, uint64_t ident, uint32_t filter) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    auto ev = WaitEvent(q, ident, filter, 50);
    if (ev && (ev->flags & EV_EOF)) return ev;
  }
  return std::nullopt;
}

class FdWriteTest : public ::testing::Test {
 protected:
  void SetUp() override { signal(SIGPIPE, SIG_IGN); }

  int Add(int fd, uint32_t flags = 0, uint32_t fflags = 0, int64_t data = 0) {
    return q_->Change(Ev(fd, EVFILT_WRITE, EV_ADD | flags, fflags, data));
  }

  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_ = rt_.NewQueue();
};

// ---- pipes -------------------------------------------------------------------

TEST_F(FdWriteTest, PipeDataIsFreeSpace) {
  Pipe p(O_NONBLOCK);
  const int size = fcntl(p.w.get(), F_GETPIPE_SZ);
  ASSERT_GT(size, 0);
  ASSERT_EQ(Add(p.w.get()), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, size);
  EXPECT_EQ(evs[0].flags & EV_EOF, 0u);
  WriteBytes(p.w.get(), 100);
  evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, size - 100);
}

TEST_F(FdWriteTest, PipeEofWhenReaderClosed) {
  Pipe p(O_NONBLOCK);
  ASSERT_EQ(Add(p.w.get(), EV_CLEAR), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].flags & EV_EOF, 0u);
  p.r.reset();  // wakes the (edge-triggered) knote
  auto ev = WaitEvent(*q_, p.w.get(), EVFILT_WRITE);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->flags & EV_EOF);
  EXPECT_EQ(ev->data, 0);
  EXPECT_EQ(write(p.w.get(), "x", 1), -1);  // indeed
  EXPECT_EQ(errno, EPIPE);
}

TEST_F(FdWriteTest, FullPipeDoesNotFireUntilDrained) {
  Pipe p(O_NONBLOCK);
  const int size = fcntl(p.w.get(), F_GETPIPE_SZ);
  std::string chunk(4096, 'f');
  while (write(p.w.get(), chunk.data(), chunk.size()) > 0) {
  }
  ASSERT_EQ(errno, EAGAIN);
  ASSERT_EQ(Add(p.w.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  std::string buf(size, '\0');
  ASSERT_EQ(read(p.r.get(), &buf[0], buf.size()), size);  // drain it all
  auto ev = WaitEvent(*q_, p.w.get(), EVFILT_WRITE);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, size);
}

TEST_F(FdWriteTest, PipeFiresAtPipeBuf) {
  // A one-page pipe holding a little: less than PIPE_BUF is free, and Linux
  // agrees it is not writable.
  Pipe p(O_NONBLOCK);
  ASSERT_GE(fcntl(p.w.get(), F_SETPIPE_SZ, 4096), 4096);
  const int size = fcntl(p.w.get(), F_GETPIPE_SZ);
  ASSERT_EQ(size, PIPE_BUF);
  WriteBytes(p.w.get(), 1);
  ASSERT_EQ(Add(p.w.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  char c;
  ASSERT_EQ(read(p.r.get(), &c, 1), 1);
  auto ev = WaitEvent(*q_, p.w.get(), EVFILT_WRITE);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, PIPE_BUF);
}

TEST_F(FdWriteTest, NoteLowatOnPipe) {
  Pipe p(O_NONBLOCK);
  const int size = fcntl(p.w.get(), F_GETPIPE_SZ);
  ASSERT_EQ(Add(p.w.get(), 0, NOTE_LOWAT, size + 1), 0);  // can never be met
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  ASSERT_EQ(Add(p.w.get(), 0, NOTE_LOWAT, size), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, size);
  WriteBytes(p.w.get(), 1);  // now size - 1 < mark
  EXPECT_TRUE(q_->Collect(8, 0).empty());
}

TEST_F(FdWriteTest, WriteOnReadEndReportsEofWhenTheLastWriterCloses) {
  // NetBSD's filt_pipewrite: no peer left, EV_EOF, data 0.
  Pipe p(O_NONBLOCK);
  ScopedFd w2(fcntl(p.w.get(), F_DUPFD_CLOEXEC, 0));
  ASSERT_EQ(Add(p.r.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 50).empty());  // never writable
  p.w.reset();
  EXPECT_TRUE(q_->Collect(8, 50).empty());  // a writer is left
  w2.reset();
  auto ev = WaitEvent(*q_, p.r.get(), EVFILT_WRITE);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->flags & EV_EOF);
  EXPECT_EQ(ev->data, 0);
}

TEST_F(FdWriteTest, WriteOnAPipeWhosePeerIsAlreadyClosedIsEbadf) {
  // NetBSD's pipe_kqfilter attaches EVFILT_WRITE to the peer and answers
  // EBADF when it is gone (its tests/kernel/kqueue/write/t_pipe.c, pipe1).
  {
    Pipe p(O_NONBLOCK);
    p.r.reset();  // no reader left
    EXPECT_EQ(Add(p.w.get()), EBADF);
    EXPECT_TRUE(q_->Collect(8, 0).empty());
  }
  {
    Pipe p(O_NONBLOCK);
    p.w.reset();  // no writer left
    EXPECT_EQ(Add(p.r.get()), EBADF);
  }
  // The other filters attach: READ on the write end reports EV_EOF.
  Pipe p(O_NONBLOCK);
  p.r.reset();
  ASSERT_EQ(q_->Change(Ev(p.w.get(), EVFILT_READ, EV_ADD)), 0);
  auto ev = WaitEvent(*q_, p.w.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->flags & EV_EOF);
}

TEST_F(FdWriteTest, WriteOnAFifoWithoutReaderAttachesAndReportsEof) {
  // A FIFO is a fifofs socket on NetBSD: the filter attaches and reports
  // EV_EOF (filt_fifowrite), not EBADF as for a pipe.
  const char* dir = getenv("TEST_TMPDIR");
  ASSERT_NE(dir, nullptr);
  const std::string path = std::string(dir) + "/write_fifo_no_reader";
  unlink(path.c_str());
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  ScopedFd r(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(r);
  ScopedFd w(open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(w);
  r.reset();
  ASSERT_EQ(Add(w.get()), 0);
  auto ev = WaitEof(*q_, w.get(), EVFILT_WRITE);
  ASSERT_TRUE(ev);
  unlink(path.c_str());
}

// ---- sockets -----------------------------------------------------------------

TEST_F(FdWriteTest, SocketDataIsFreeSendSpace) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  ASSERT_EQ(getsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len), 0);
  ASSERT_EQ(Add(a.get()), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, sndbuf);  // nothing queued yet
  WriteBytes(a.get(), 1000);
  evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_LE(evs[0].data, sndbuf - 1000);  // (plus the kernel's overhead)
  EXPECT_GT(evs[0].data, 0);
}

TEST_F(FdWriteTest, TcpDataIsFreeSendSpace) {
  TcpPair t;
  ASSERT_TRUE(t.server);
  ASSERT_EQ(Add(t.client.get()), 0);
  auto ev = WaitEvent(*q_, t.client.get(), EVFILT_WRITE);
  ASSERT_TRUE(ev);
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  ASSERT_EQ(getsockopt(t.client.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len), 0);
  EXPECT_GT(ev->data, 0);
  EXPECT_LE(ev->data, sndbuf);
  EXPECT_EQ(ev->flags & EV_EOF, 0u);
}

TEST_F(FdWriteTest, SocketpairEofWhenPeerClosed) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  ASSERT_EQ(Add(a.get(), EV_CLEAR), 0);
  ASSERT_EQ(q_->Collect(8, 0).size(), 1u);
  b.reset();
  auto ev = WaitEof(*q_, a.get(), EVFILT_WRITE);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, 0u);
}

TEST_F(FdWriteTest, TcpEofAfterResetCarriesEconnreset) {
  TcpPair t;
  ASSERT_TRUE(t.server);
  ASSERT_EQ(Add(t.server.get()), 0);
  linger lg{1, 0};
  ASSERT_EQ(setsockopt(t.client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  t.client.reset();
  auto ev = WaitEof(*q_, t.server.get(), EVFILT_WRITE);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, static_cast<uint32_t>(ECONNRESET));
}

TEST_F(FdWriteTest, RefusedConnectIsEofWithEconnrefused) {
  // A port nobody listens on: bind one, note it, close it.
  sockaddr_in addr;
  { ScopedFd ls = TcpListener(&addr); }
  ScopedFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  int r = connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ASSERT_TRUE(r == -1 && (errno == EINPROGRESS || errno == ECONNREFUSED));
  ASSERT_EQ(Add(s.get()), 0);
  auto ev = WaitEof(*q_, s.get(), EVFILT_WRITE);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, static_cast<uint32_t>(ECONNREFUSED));
  // The usual check after a non-blocking connect still works: the filter
  // left the pending error in place.
  int err = 0;
  socklen_t len = sizeof err;
  ASSERT_EQ(getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len), 0);
  EXPECT_EQ(err, ECONNREFUSED);
}

TEST_F(FdWriteTest, UnconnectedOrListeningSocketIsNotWritable) {
  ScopedFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(Add(s.get()), 0);
  sockaddr_in addr;
  ScopedFd ls = TcpListener(&addr);
  ASSERT_EQ(Add(ls.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
}

// ---- other files ------------------------------------------------------------

TEST_F(FdWriteTest, RegularFileIsAlwaysWritable) {
  const char* dir = getenv("TEST_TMPDIR");
  std::string path = std::string(dir ? dir : "/tmp") + "/fd_write_test.XXXXXX";
  ScopedFd f(mkostemp(&path[0], O_CLOEXEC));
  ASSERT_TRUE(f);
  unlink(path.c_str());
  ASSERT_EQ(Add(f.get()), 0);
  for (int i = 0; i < 2; i++) {
    auto evs = q_->Collect(8, 0);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].data, 0);
  }
}

TEST_F(FdWriteTest, EventfdDataIsRoomLeft) {
  ScopedFd efd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  uint64_t v = 5;
  ASSERT_EQ(write(efd.get(), &v, sizeof v), 8);
  ASSERT_EQ(Add(efd.get()), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(static_cast<uint64_t>(evs[0].data), 0xfffffffffffffffeULL - 5);
}

TEST_F(FdWriteTest, WriteOnAKqueueIsEinval) {
  auto child = rt_.NewQueue();
  EXPECT_EQ(Add(child->fd()), EINVAL);
}

}  // namespace
