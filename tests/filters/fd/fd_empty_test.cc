// EVFILT_EMPTY: a socket whose send queue is empty (for TCP: everything
// written was acknowledged). Linux wakes no one when a TCP queue drains, so
// these tests also pin down the filter's own re-checks: a drain must be seen
// without any other activity on the socket.
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "daemon/core/filter_registry.h"
#include "daemon/filters/fd/fd_filter.h"
#include "daemon/util/scoped_fd.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"
#include "tests/support/fd_test_util.h"

namespace {

using kqd::ScopedFd;
using kqd::testing::Ev;
using kqd::testing::Pipe;
using kqd::testing::ReadBytes;
using kqd::testing::TcpConnect;
using kqd::testing::TcpListener;
using kqd::testing::TcpPair;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;
using kqd::testing::WaitEvent;
using kqd::testing::WriteBytes;

int OutQueue(int fd) {
  int n = -1;
  return ioctl(fd, SIOCOUTQ, &n) == 0 ? n : -1;
}

// Writes to non-blocking `fd` until the send buffer is full; returns the
// number of bytes written. A peer that does not read lets TCP fill its
// receive window first, so everything left in the sender is unacknowledged.
size_t FillSendBuffer(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::string chunk(64 * 1024, 'e');
  size_t total = 0;
  for (;;) {
    ssize_t n = write(fd, chunk.data(), chunk.size());
    if (n <= 0) break;
    total += static_cast<size_t>(n);
  }
  return total;
}

// Reads exactly `n` bytes from (blocking) `fd`.
void Drain(int fd, size_t n) {
  std::string buf(256 * 1024, '\0');
  while (n > 0) {
    ssize_t got = read(fd, &buf[0], std::min(n, buf.size()));
    ASSERT_GT(got, 0) << strerror(errno);
    n -= static_cast<size_t>(got);
  }
}

class FdEmptyTest : public ::testing::Test {
 protected:
  void SetUp() override { signal(SIGPIPE, SIG_IGN); }

  int Add(int fd, uint32_t flags = 0, uint64_t udata = 0) {
    return q_->Change(Ev(fd, EVFILT_EMPTY, EV_ADD | flags, 0, 0, udata));
  }
  int Delete(int fd) { return q_->Change(Ev(fd, EVFILT_EMPTY, EV_DELETE)); }

  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_ = rt_.NewQueue();
};

TEST_F(FdEmptyTest, IdleConnectionFiresAtOnceAndStaysLevelTriggered) {
  TcpPair t;
  ASSERT_TRUE(t.server);
  ASSERT_EQ(Add(t.client.get()), 0);
  for (int i = 0; i < 2; i++) {  // reported on every collection while empty
    auto evs = q_->Collect(8, 0);
    ASSERT_EQ(evs.size(), 1u) << i;
    EXPECT_EQ(evs[0].ident, static_cast<uint64_t>(t.client.get()));
    EXPECT_EQ(evs[0].filter, EVFILT_EMPTY);
    EXPECT_EQ(evs[0].data, 0);
    EXPECT_EQ(evs[0].fflags, 0u);
    EXPECT_EQ(evs[0].flags & EV_EOF, 0u);
  }
}

TEST_F(FdEmptyTest, UdataIsBitExact) {
  TcpPair t;
  ASSERT_TRUE(t.server);
  const uint64_t udata = 0xfedcba9876543210ull;
  ASSERT_EQ(Add(t.server.get(), 0, udata), 0);
  auto ev = WaitEvent(*q_, t.server.get(), EVFILT_EMPTY, 0);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->udata, udata);
  ASSERT_EQ(Add(t.server.get(), 0, ~0ull), 0);  // EV_ADD again updates it
  ev = WaitEvent(*q_, t.server.get(), EVFILT_EMPTY, 0);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->udata, ~0ull);
}

TEST_F(FdEmptyTest, FullSendBufferFiresOnlyOnceThePeerTookEverything) {
  TcpPair t;
  ASSERT_TRUE(t.server);
  const size_t sent = FillSendBuffer(t.client.get());
  ASSERT_GT(sent, 0u);
  ASSERT_GT(OutQueue(t.client.get()), 0);
  ASSERT_EQ(Add(t.client.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 150).empty());
  // A little read: the window opens and ACKs free room (a write-space
  // wake-up), but most of the data is still unacknowledged.
  const size_t part = std::min<size_t>(64 * 1024, sent / 4);
  Drain(t.server.get(), part);
  EXPECT_TRUE(q_->Collect(8, 150).empty());
  ASSERT_GT(OutQueue(t.client.get()), 0);
  Drain(t.server.get(), sent - part);
  auto ev = WaitEvent(*q_, t.client.get(), EVFILT_EMPTY, 3000);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 0);
  EXPECT_EQ(OutQueue(t.client.get()), 0);
}

TEST_F(FdEmptyTest, SilentDrainIsSeen) {
  // Data queued behind a small receive window, far from filling the send
  // buffer: Linux sends the writer no wake-up at all when it is finally
  // acknowledged, so only the filter's own re-checks can see the drain.
  sockaddr_in addr;
  ScopedFd ls = TcpListener(&addr);
  ASSERT_TRUE(ls);
  const int small = 4096;  // inherited by the accepted socket
  ASSERT_EQ(setsockopt(ls.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  ScopedFd client = TcpConnect(addr);
  ASSERT_TRUE(client);
  ScopedFd server(accept4(ls.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  const int big = 1 << 20;
  ASSERT_EQ(setsockopt(client.get(), SOL_SOCKET, SO_SNDBUF, &big, sizeof big), 0);
  ASSERT_EQ(Add(client.get()), 0);
  ASSERT_EQ(q_->Collect(8, 0).size(), 1u);
  fcntl(client.get(), F_SETFL, fcntl(client.get(), F_GETFL) | O_NONBLOCK);
  WriteBytes(client.get(), 32 * 1024);  // all of it fits: no EAGAIN
  EXPECT_TRUE(q_->Collect(8, 150).empty());
  ASSERT_GT(OutQueue(client.get()), 0);
  Drain(server.get(), 32 * 1024);
  auto ev = WaitEvent(*q_, client.get(), EVFILT_EMPTY, 3000);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 0);
}

TEST_F(FdEmptyTest, ClearFiresOncePerDrain) {
  TcpPair t;
  ASSERT_TRUE(t.server);
  ASSERT_EQ(Add(t.client.get(), EV_CLEAR), 0);
  ASSERT_EQ(q_->Collect(8, 0).size(), 1u);
  // Still empty, but nothing drained: neither the filter's own looks
  // (every 64 ms at most) nor the EPOLLOUT that epoll reports when the
  // item is added may report it again.
  EXPECT_TRUE(q_->Collect(8, 300).empty());
  // A write acknowledged at once (the peer's window is open): one event,
  // though the queue may never have been seen non-empty.
  WriteBytes(t.client.get(), 1000);
  auto ev = WaitEvent(*q_, t.client.get(), EVFILT_EMPTY, 3000);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 0);
  EXPECT_TRUE(q_->Collect(8, 300).empty());
  WriteBytes(t.client.get(), 1000);  // and again
  EXPECT_TRUE(WaitEvent(*q_, t.client.get(), EVFILT_EMPTY, 3000));
}

TEST_F(FdEmptyTest, ClosedFdRemovesTheKnote) {
  std::shared_ptr<kqd::FilterRegistration> reg;
  ASSERT_EQ(rt_.get()->filters().Acquire(EVFILT_EMPTY, &reg), 0);
  auto* filter = dynamic_cast<kqd::FdFilter*>(reg->ops());
  ASSERT_NE(filter, nullptr);
  TcpPair t;
  ASSERT_TRUE(t.server);
  const int fd = t.client.get();
  ASSERT_EQ(Add(fd), 0);  // queued: it fired at once
  EXPECT_EQ(filter->watcher().item_count(), 1u);
  t.client.reset();
  // Collection finds the file gone and deletes the knote, unreported,
  // before any change names the fd.
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  EXPECT_EQ(filter->watcher().item_count(), 0u);
  EXPECT_EQ(Delete(fd), EBADF);  // the number names no descriptor now
}

TEST_F(FdEmptyTest, ReusedFdNumberIsANewFile) {
  TcpPair t, other;
  ASSERT_TRUE(t.server && other.server);
  const int fd = t.client.get();
  ASSERT_EQ(Add(fd), 0);
  ASSERT_EQ(dup2(other.client.get(), fd), fd);  // closes the watched socket
  EXPECT_EQ(Delete(fd), ENOENT);
}

TEST_F(FdEmptyTest, OnlySocketsAreSupported) {
  Pipe p;
  EXPECT_EQ(Add(p.r.get()), EINVAL);
  EXPECT_EQ(Add(p.w.get()), EINVAL);
  ScopedFd efd(eventfd(0, EFD_CLOEXEC));
  EXPECT_EQ(Add(efd.get()), EINVAL);
  const char* dir = getenv("TEST_TMPDIR");
  std::string path = std::string(dir ? dir : "/tmp") + "/fd_empty_test.XXXXXX";
  ScopedFd f(mkostemp(&path[0], O_CLOEXEC));
  ASSERT_TRUE(f);
  unlink(path.c_str());
  EXPECT_EQ(Add(f.get()), EINVAL);
  auto child = rt_.NewQueue();
  EXPECT_EQ(Add(child->fd()), EINVAL);
  EXPECT_EQ(Delete(p.w.get()), ENOENT);  // nothing was registered
  ScopedFd closed(dup(p.r.get()));
  const int number = closed.get();
  closed.reset();
  EXPECT_EQ(Add(number), EBADF);
}

TEST_F(FdEmptyTest, ListeningAndUnconnectedSocketsAreEmpty) {
  sockaddr_in addr;
  ScopedFd ls = TcpListener(&addr);
  ASSERT_TRUE(ls);
  ScopedFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(Add(ls.get()), 0);
  ASSERT_EQ(Add(s.get()), 0);
  EXPECT_EQ(q_->Collect(8, 0).size(), 2u);
}

TEST_F(FdEmptyTest, ResetConnectionIsEmpty) {
  // BSD flushes the send buffer when the connection dies; Linux keeps the
  // unacknowledged count in SIOCOUTQ, which the filter must disregard.
  TcpPair t;
  ASSERT_TRUE(t.server);
  ASSERT_GT(FillSendBuffer(t.client.get()), 0u);
  ASSERT_EQ(Add(t.client.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 100).empty());
  linger lg{1, 0};
  ASSERT_EQ(setsockopt(t.server.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  t.server.reset();  // RST
  auto ev = WaitEvent(*q_, t.client.get(), EVFILT_EMPTY, 3000);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->flags & EV_EOF, 0u);  // BSD's filter never sets it
}

TEST_F(FdEmptyTest, UnixStreamFiresWhenThePeerHasReadEverything) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  ASSERT_EQ(Add(a.get()), 0);
  ASSERT_EQ(q_->Collect(8, 0).size(), 1u);
  WriteBytes(a.get(), 1000);
  EXPECT_TRUE(q_->Collect(8, 100).empty());
  ReadBytes(b.get(), 1000);
  EXPECT_TRUE(WaitEvent(*q_, a.get(), EVFILT_EMPTY, 2000));
}

}  // namespace
