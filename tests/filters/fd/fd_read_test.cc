// EVFILT_READ on file descriptors: what data, EV_EOF and fflags say per file
// type (pipe, socketpair, TCP, listening sockets, UDP, pty, eventfd, regular
// file), level-triggered against EV_CLEAR behaviour, and low-water marks.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
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
using kqd::testing::TcpPair;
using kqd::testing::TcpListener;
using kqd::testing::TcpConnect;
using kqd::testing::WaitEvent;
using kqd::testing::ReadBytes;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;
using kqd::testing::WriteBytes;

// Waits until an event for (ident, filter) has data == want (data that
// settles asynchronously: connections, tty buffers).
std::optional<kq_kevent> WaitData(TestQueue& q, uint64_t ident, uint32_t filter,
                                  int64_t want, long ms = 2000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < deadline) {
    auto ev = WaitEvent(q, ident, filter, 50);
    if (ev && ev->data == want) return ev;
  }
  return std::nullopt;
}
class FdReadTest : public ::testing::Test {
 protected:
  void SetUp() override { signal(SIGPIPE, SIG_IGN); }

  int Add(int fd, uint32_t flags = 0, uint32_t fflags = 0, int64_t data = 0) {
    return q_->Change(Ev(fd, EVFILT_READ, EV_ADD | flags, fflags, data));
  }

  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_ = rt_.NewQueue();
};

// ---- pipes -------------------------------------------------------------------

TEST_F(FdReadTest, PipeDataIsBytesWritten) {
  Pipe p;
  ASSERT_EQ(Add(p.r.get(), 0, 0, 0), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());  // empty pipe: nothing
  WriteBytes(p.w.get(), 5);
  auto ev = WaitEvent(*q_, p.r.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 5);
  EXPECT_EQ(ev->flags & EV_EOF, 0u);
  EXPECT_EQ(ev->fflags, 0u);
}

TEST_F(FdReadTest, DataAlreadyThereFiresAtRegistration) {
  Pipe p;
  WriteBytes(p.w.get(), 9);
  ASSERT_EQ(Add(p.r.get()), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 9);
}

TEST_F(FdReadTest, LevelTriggeredUntilDrained) {
  Pipe p;
  ASSERT_EQ(Add(p.r.get()), 0);
  WriteBytes(p.w.get(), 10);
  ASSERT_TRUE(WaitEvent(*q_, p.r.get(), EVFILT_READ));
  // Reported at every collection while data remains, with current data.
  for (int i = 0; i < 3; i++) {
    auto evs = q_->Collect(8, 0);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].data, 10);
  }
  ReadBytes(p.r.get(), 4);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 6);
  ReadBytes(p.r.get(), 6);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  EXPECT_TRUE(q_->Collect(8, 50).empty());
}

TEST_F(FdReadTest, ClearReportsOncePerWrite) {
  Pipe p;
  ASSERT_EQ(Add(p.r.get(), EV_CLEAR), 0);
  WriteBytes(p.w.get(), 3);
  auto ev = WaitEvent(*q_, p.r.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 3);
  EXPECT_TRUE(q_->Collect(8, 50).empty());  // nothing new: not again
  WriteBytes(p.w.get(), 2);                 // unread bytes stay counted
  ev = WaitEvent(*q_, p.r.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 5);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  WriteBytes(p.w.get(), 1);
  ev = WaitEvent(*q_, p.r.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 6);
}

TEST_F(FdReadTest, EofWhenWriterClosedKeepsRemainingData) {
  Pipe p;
  ASSERT_EQ(Add(p.r.get()), 0);
  WriteBytes(p.w.get(), 7);
  p.w.reset();
  auto ev = WaitData(*q_, p.r.get(), EVFILT_READ, 7);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->flags & EV_EOF);
  ReadBytes(p.r.get(), 7);
  // EOF stays readable (read returns 0), with no data.
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(evs[0].flags & EV_EOF);
  EXPECT_EQ(evs[0].data, 0);
}

TEST_F(FdReadTest, EofWakesAnEmptyPipe) {
  Pipe p;
  ASSERT_EQ(Add(p.r.get(), EV_CLEAR), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  p.w.reset();
  auto ev = WaitEvent(*q_, p.r.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->flags & EV_EOF);
  EXPECT_EQ(ev->data, 0);
}

TEST_F(FdReadTest, ReadOnWriteEndReportsEofWhenTheLastReaderCloses) {
  // NetBSD's filt_piperead (FreeBSD, macOS alike); asyncio's write-pipe
  // transport watches its write end so to learn that the reader is gone.
  Pipe p;
  ScopedFd r2(fcntl(p.r.get(), F_DUPFD_CLOEXEC, 0));
  ASSERT_EQ(Add(p.w.get()), 0);
  WriteBytes(p.w.get(), 5);
  EXPECT_TRUE(q_->Collect(8, 50).empty());  // nothing to read on this end
  p.r.reset();
  EXPECT_TRUE(q_->Collect(8, 50).empty());  // a reader is left
  r2.reset();
  auto ev = WaitEvent(*q_, p.w.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->flags & EV_EOF);
  EXPECT_EQ(ev->data, 0);
  // Level-triggered: it stays.
  EXPECT_EQ(q_->Collect(8, 0).size(), 1u);
}

TEST_F(FdReadTest, ReadOnWriteEndAddedAfterTheReaderClosedFiresAtOnce) {
  Pipe p;
  p.r.reset();
  ASSERT_EQ(Add(p.w.get(), EV_CLEAR), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(evs[0].flags & EV_EOF);
  EXPECT_TRUE(q_->Collect(8, 50).empty());  // EV_CLEAR: once
}

TEST_F(FdReadTest, NoteLowatOnPipe) {
  Pipe p;
  ASSERT_EQ(Add(p.r.get(), 0, NOTE_LOWAT, 10), 0);
  WriteBytes(p.w.get(), 5);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  WriteBytes(p.w.get(), 4);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  WriteBytes(p.w.get(), 1);
  auto ev = WaitEvent(*q_, p.r.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 10);
  // EV_ADD on the knote moves the mark (saved sfflags/sdata).
  ASSERT_EQ(Add(p.r.get(), 0, NOTE_LOWAT, 11), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  ASSERT_EQ(Add(p.r.get(), 0, 0, 0), 0);
  EXPECT_EQ(q_->Collect(8, 0).size(), 1u);
}

// ---- sockets -----------------------------------------------------------------

TEST_F(FdReadTest, SocketpairData) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  ASSERT_EQ(Add(a.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  WriteBytes(b.get(), 11);
  auto ev = WaitEvent(*q_, a.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 11);
  EXPECT_EQ(ev->flags & EV_EOF, 0u);
}

TEST_F(FdReadTest, SocketpairEofOnPeerClose) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  ASSERT_EQ(Add(a.get()), 0);
  WriteBytes(b.get(), 2);
  b.reset();
  auto ev = WaitData(*q_, a.get(), EVFILT_READ, 2);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->flags & EV_EOF);
  EXPECT_EQ(ev->fflags, 0u);
}

TEST_F(FdReadTest, SoRcvlowatIsHonoured) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  int lowat = 8;
  ASSERT_EQ(setsockopt(a.get(), SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat), 0);
  ASSERT_EQ(Add(a.get()), 0);
  WriteBytes(b.get(), 5);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  WriteBytes(b.get(), 3);
  auto ev = WaitEvent(*q_, a.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 8);
}

TEST_F(FdReadTest, NoteLowatOnSocketOverridesRcvlowat) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  ASSERT_EQ(Add(a.get(), 0, NOTE_LOWAT, 4), 0);
  WriteBytes(b.get(), 3);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  WriteBytes(b.get(), 1);
  auto ev = WaitEvent(*q_, a.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 4);
}

TEST_F(FdReadTest, TcpLoopbackData) {
  TcpPair t;
  ASSERT_TRUE(t.client && t.server);
  ASSERT_EQ(Add(t.server.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  WriteBytes(t.client.get(), 20);
  auto ev = WaitData(*q_, t.server.get(), EVFILT_READ, 20);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->flags & EV_EOF, 0u);
}

TEST_F(FdReadTest, TcpListenBacklogIsPendingConnections) {
  sockaddr_in addr;
  ScopedFd ls = TcpListener(&addr);
  ASSERT_TRUE(ls);
  ASSERT_EQ(Add(ls.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  std::vector<ScopedFd> clients;
  for (int i = 0; i < 3; i++) {
    clients.push_back(TcpConnect(addr));
    ASSERT_TRUE(clients.back());
  }
  ASSERT_TRUE(WaitData(*q_, ls.get(), EVFILT_READ, 3));
  ScopedFd one(accept4(ls.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(WaitData(*q_, ls.get(), EVFILT_READ, 2));
}

TEST_F(FdReadTest, UnixListenBacklogIsPendingConnections) {
  ScopedFd ls(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string name = "kqueued-fd-read-test-" + std::to_string(getpid());
  memcpy(addr.sun_path + 1, name.data(), name.size());  // abstract
  socklen_t len = offsetof(sockaddr_un, sun_path) + 1 + name.size();
  ASSERT_EQ(bind(ls.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(listen(ls.get(), 8), 0);
  ASSERT_EQ(Add(ls.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  std::vector<ScopedFd> clients;
  for (int i = 0; i < 2; i++) {
    clients.emplace_back(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(connect(clients.back().get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  }
  ASSERT_TRUE(WaitData(*q_, ls.get(), EVFILT_READ, 2));
}

TEST_F(FdReadTest, TcpEofOnPeerCloseHasNoError) {
  TcpPair t;
  ASSERT_EQ(Add(t.server.get()), 0);
  WriteBytes(t.client.get(), 3);
  t.client.reset();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  std::optional<kq_kevent> ev;
  while (std::chrono::steady_clock::now() < deadline) {
    ev = WaitEvent(*q_, t.server.get(), EVFILT_READ, 50);
    if (ev && (ev->flags & EV_EOF)) break;
  }
  ASSERT_TRUE(ev && (ev->flags & EV_EOF));
  EXPECT_EQ(ev->fflags, 0u);
  EXPECT_EQ(ev->data, 3);  // data is still there to read
}

TEST_F(FdReadTest, TcpEofAfterResetCarriesEconnreset) {
  TcpPair t;
  ASSERT_EQ(Add(t.server.get()), 0);
  linger lg{1, 0};  // close with RST
  ASSERT_EQ(setsockopt(t.client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  t.client.reset();
  auto ev = WaitEvent(*q_, t.server.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->flags & EV_EOF);
  EXPECT_EQ(ev->fflags, static_cast<uint32_t>(ECONNRESET));
  // The filter did not consume the error: the client's read still gets it.
  char c;
  EXPECT_EQ(read(t.server.get(), &c, 1), -1);
  EXPECT_EQ(errno, ECONNRESET);
}

TEST_F(FdReadTest, UnconnectedStreamSocketDoesNotFire) {
  ScopedFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(Add(s.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
}

TEST_F(FdReadTest, UdpDataIsNextDatagram) {
  ScopedFd rx(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ScopedFd tx(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(bind(rx.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(getsockname(rx.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ASSERT_EQ(Add(rx.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  auto send = [&](size_t n) {
    std::string s(n, 'u');
    ASSERT_EQ(sendto(tx.get(), s.data(), n, 0, reinterpret_cast<sockaddr*>(&addr), len),
              static_cast<ssize_t>(n));
  };
  send(10);
  send(20);
  // Linux tells the size of the next datagram only (documented deviation
  // from BSD's byte count of the whole buffer).
  auto ev = WaitEvent(*q_, rx.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 10);
  char buf[64];
  ASSERT_EQ(recv(rx.get(), buf, sizeof buf, 0), 10);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 20);
  ASSERT_EQ(recv(rx.get(), buf, sizeof buf, 0), 20);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  // An empty datagram is still something to read.
  send(0);
  ev = WaitEvent(*q_, rx.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 0);
}

// ---- pty, eventfd, regular file -----------------------------------------------

TEST_F(FdReadTest, PtyMasterAndSlave) {
  ScopedFd master(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(master);
  ASSERT_EQ(grantpt(master.get()), 0);
  ASSERT_EQ(unlockpt(master.get()), 0);
  ScopedFd slave(open(ptsname(master.get()), O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(slave);
  termios t;
  ASSERT_EQ(tcgetattr(slave.get(), &t), 0);
  cfmakeraw(&t);  // no echo, no line discipline games: bytes are bytes
  ASSERT_EQ(tcsetattr(slave.get(), TCSANOW, &t), 0);

  ASSERT_EQ(Add(slave.get()), 0);
  ASSERT_EQ(Add(master.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  WriteBytes(master.get(), 5);
  ASSERT_TRUE(WaitData(*q_, slave.get(), EVFILT_READ, 5));
  WriteBytes(slave.get(), 2);
  ASSERT_TRUE(WaitData(*q_, master.get(), EVFILT_READ, 2));
  ReadBytes(master.get(), 2);
  ReadBytes(slave.get(), 5);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  // The slave side goes away: the master hangs up.
  ASSERT_EQ(q_->Change(Ev(slave.get(), EVFILT_READ, EV_DELETE)), 0);
  slave.reset();
  auto ev = WaitEvent(*q_, master.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->flags & EV_EOF);
}

TEST_F(FdReadTest, EventfdDataIsCounter) {
  ScopedFd efd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ASSERT_EQ(Add(efd.get()), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  uint64_t v = 5;
  ASSERT_EQ(write(efd.get(), &v, sizeof v), 8);
  auto ev = WaitEvent(*q_, efd.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 5);
  v = 3;
  ASSERT_EQ(write(efd.get(), &v, sizeof v), 8);
  ASSERT_TRUE(WaitData(*q_, efd.get(), EVFILT_READ, 8));
  ASSERT_EQ(read(efd.get(), &v, sizeof v), 8);  // evaluating did not consume it
  EXPECT_EQ(v, 8u);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
}

class RegularFileReadTest : public FdReadTest {
 protected:
  void SetUp() override {
    FdReadTest::SetUp();
    const char* dir = getenv("TEST_TMPDIR");
    path_ = std::string(dir ? dir : "/tmp") + "/fd_read_test.XXXXXX";
    writer_.reset(mkostemp(&path_[0], O_CLOEXEC));
    ASSERT_TRUE(writer_);
    reader_.reset(open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(reader_);
  }
  void TearDown() override { unlink(path_.c_str()); }

  std::string path_;
  ScopedFd writer_, reader_;
};

TEST_F(RegularFileReadTest, DataIsSizeMinusOffset) {
  WriteBytes(writer_.get(), 100);
  ASSERT_EQ(Add(reader_.get()), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 100);
  ReadBytes(reader_.get(), 40);
  evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 60);
  // The offset is the reader's: lseek moves it.
  ASSERT_EQ(lseek(reader_.get(), 90, SEEK_SET), 90);
  evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 10);
  ASSERT_EQ(lseek(reader_.get(), 0, SEEK_END), 100);
  EXPECT_TRUE(q_->Collect(8, 0).empty());  // at the end: nothing
}

TEST_F(RegularFileReadTest, FiresAgainWhenTheFileGrows) {
  WriteBytes(writer_.get(), 10);
  ASSERT_EQ(Add(reader_.get()), 0);
  ReadBytes(reader_.get(), 10);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  WriteBytes(writer_.get(), 7);  // append: BSD's filter fires again
  auto ev = WaitEvent(*q_, reader_.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 7);
  // After seeking back, the next evaluation counts from the new offset.
  ASSERT_EQ(lseek(reader_.get(), 2, SEEK_SET), 2);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 15);
}

TEST_F(RegularFileReadTest, ClearFiresOncePerAppend) {
  ASSERT_EQ(Add(reader_.get(), EV_CLEAR), 0);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  WriteBytes(writer_.get(), 4);
  auto ev = WaitEvent(*q_, reader_.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 4);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  WriteBytes(writer_.get(), 4);
  ev = WaitEvent(*q_, reader_.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 8);
}

TEST_F(RegularFileReadTest, NoteLowat) {
  ASSERT_EQ(Add(reader_.get(), 0, NOTE_LOWAT, 6), 0);
  WriteBytes(writer_.get(), 5);
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  WriteBytes(writer_.get(), 1);
  auto ev = WaitEvent(*q_, reader_.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 6);
}

TEST_F(FdReadTest, DevNullIsAlwaysReady) {
  ScopedFd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_EQ(Add(null.get()), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 0);
}

}  // namespace
