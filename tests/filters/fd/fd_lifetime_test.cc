// Lifetime of fd knotes: the daemon never keeps a client's file alive,
// closing a watched fd removes its knotes silently, a reused fd number is a
// new file, and registrations cost no descriptor each (the key-number
// scheme of fd_watch.h, checked against the kernel's own list of epoll items).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <atomic>
#include <thread>
#include <string>
#include <vector>

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
using kqd::testing::WaitEvent;
using kqd::testing::TestRuntime;
using kqd::testing::WriteBytes;

using kqd::testing::TestQueue;
void SetNonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }
// Waits (1 s at most) until `fd` reports POLLERR or POLLHUP: its peer is
// gone. The daemon may be evaluating a knote at the moment the test closes
// its fd (the reactor thread reacts to earlier wake-ups), holding a transient
// copy for microseconds; the peer then learns a moment later, from the
// daemon's close. A file kept alive would never get there.
bool PeerGoneSoon(int fd) {
  pollfd p{fd, 0, 0};
  return poll(&p, 1, 1000) == 1 && (p.revents & (POLLERR | POLLHUP));
}

size_t CountOpenFds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1;  // the directory's own fd
}

// The kernel's list of items in an epoll instance: one "tfd:" line each.
size_t KernelEpollItems(int epfd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(epfd));
  size_t n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.rfind("tfd:", 0) == 0) n++;
  return n;
}

// The same over every epoll instance (shard) of a watcher.
size_t KernelWatcherItems(const kqd::FdWatcher& watcher) {
  size_t n = 0;
  for (int epfd : watcher.epoll_fds()) n += KernelEpollItems(epfd);
  return n;
}

class FdLifetimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);
    ASSERT_EQ(rt_.get()->filters().Acquire(EVFILT_READ, &read_reg_), 0);
    read_ = dynamic_cast<kqd::FdFilter*>(read_reg_->ops());
    ASSERT_NE(read_, nullptr);
  }

  int Add(TestQueue& q, int fd, uint32_t filter = EVFILT_READ, uint32_t flags = 0,
          uint64_t udata = 0) {
    return q.Change(Ev(fd, filter, EV_ADD | flags, 0, 0, udata));
  }
  size_t KernelReadItems() { return KernelWatcherItems(read_->watcher()); }

  void Quiesce() { rt_.Quiesce(); }

  TestRuntime rt_;
  std::shared_ptr<kqd::FilterRegistration> read_reg_;
  kqd::FdFilter* read_ = nullptr;
  std::unique_ptr<TestQueue> q_ = rt_.NewQueue();
};

// ---- never keeping the client's file alive -----------------------------------

TEST_F(FdLifetimeTest, ClosedPipeReaderIsNotKeptAlive) {
  Pipe p;
  ASSERT_EQ(Add(*q_, p.r.get()), 0);
  WriteBytes(p.w.get(), 1);
  ASSERT_TRUE(WaitEvent(*q_, p.r.get(), EVFILT_READ));  // evaluated, too
  ASSERT_EQ(q_->Collect(8, 0).size(), 1u);
  p.r.reset();  // the knote is still registered (and queued)
  ASSERT_TRUE(PeerGoneSoon(p.w.get()));
  EXPECT_EQ(write(p.w.get(), "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST_F(FdLifetimeTest, ClosedPipeWriterIsNotKeptAlive) {
  Pipe p;
  SetNonblocking(p.r.get());
  ASSERT_EQ(Add(*q_, p.w.get(), EVFILT_WRITE), 0);
  ASSERT_TRUE(WaitEvent(*q_, p.w.get(), EVFILT_WRITE));
  p.w.reset();
  ASSERT_TRUE(PeerGoneSoon(p.r.get()));
  char c;
  EXPECT_EQ(read(p.r.get(), &c, 1), 0);  // EOF, not EAGAIN
}

TEST_F(FdLifetimeTest, ClosedSocketIsNotKeptAlive) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  SetNonblocking(b.get());
  // Watched by both filters, in two kqueues.
  auto q2 = rt_.NewQueue();
  ASSERT_EQ(Add(*q_, a.get(), EVFILT_READ), 0);
  ASSERT_EQ(Add(*q_, a.get(), EVFILT_WRITE), 0);
  ASSERT_EQ(Add(*q2, a.get(), EVFILT_READ, EV_CLEAR), 0);
  WriteBytes(b.get(), 3);
  ASSERT_TRUE(WaitEvent(*q2, a.get(), EVFILT_READ));
  char buf[3];
  ASSERT_EQ(read(a.get(), buf, 3), 3);  // (unread data would make it a reset)
  a.reset();
  ASSERT_TRUE(PeerGoneSoon(b.get()));
  char c;
  EXPECT_EQ(read(b.get(), &c, 1), 0);  // the peer sees EOF
  EXPECT_EQ(write(b.get(), "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST_F(FdLifetimeTest, FileIsNotKeptAliveAfterEvAddUpdate) {
  Pipe p;
  ASSERT_EQ(Add(*q_, p.r.get(), EVFILT_READ, 0, 1), 0);
  ASSERT_EQ(Add(*q_, p.r.get(), EVFILT_READ, 0, 2), 0);  // Touch + evaluate
  p.r.reset();
  ASSERT_TRUE(PeerGoneSoon(p.w.get()));
  EXPECT_EQ(write(p.w.get(), "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST_F(FdLifetimeTest, FileIsNotKeptAliveAfterChangesThatOnlyCheckIt) {
  // Each change naming a knote checks its fd with a copy, which the change's
  // evaluation or Detach takes over; a change that makes neither (EV_DISABLE,
  // EV_ENABLE, deleting one of two knotes on one item) must still close it.
  Pipe p;
  auto q2 = rt_.NewQueue();
  ASSERT_EQ(Add(*q_, p.r.get(), EVFILT_READ, 0, 1), 0);
  ASSERT_EQ(Add(*q2, p.r.get(), EVFILT_READ, 0, 2), 0);  // the same item
  ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_DISABLE)), 0);
  ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_ENABLE)), 0);
  ASSERT_EQ(q2->Change(Ev(p.r.get(), EVFILT_READ, EV_DELETE)), 0);
  ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_DISABLE)), 0);
  EXPECT_EQ(read_->watcher().item_count(), 1u);
  p.r.reset();
  ASSERT_TRUE(PeerGoneSoon(p.w.get()));
  EXPECT_EQ(write(p.w.get(), "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST_F(FdLifetimeTest, DeleteUsesTheCheckedCopyAndEndsTheItem) {
  // EV_DELETE's check and Detach share one copy: the last knote's item is
  // deleted (not left a zombie), round after round, and nothing is held.
  for (int round = 0; round < 50; round++) {
    Pipe p;
    ASSERT_EQ(Add(*q_, p.r.get()), 0);
    ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_DELETE)), 0);
    EXPECT_EQ(KernelReadItems(), 0u) << "round " << round;
    EXPECT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_DELETE)), ENOENT);
    p.r.reset();
    ASSERT_TRUE(PeerGoneSoon(p.w.get()));
    EXPECT_EQ(write(p.w.get(), "x", 1), -1);
  }
}

// ---- close removes knotes ------------------------------------------------------

TEST_F(FdLifetimeTest, ClosingTheFdRemovesAQueuedKnoteSilently) {
  Pipe p;
  const int num = p.r.get();
  ASSERT_EQ(Add(*q_, num), 0);
  WriteBytes(p.w.get(), 4);  // queued
  p.r.reset();
  EXPECT_TRUE(q_->Collect(8, 100).empty());
  // The number names no descriptor now: EBADF, as the seed (it checks the
  // descriptor before looking for a knote).
  EXPECT_EQ(q_->Change(Ev(num, EVFILT_READ, EV_DELETE)), EBADF);
}

TEST_F(FdLifetimeTest, ClosingTheFdRemovesAnIdleKnote) {
  Pipe p;
  const int num = p.r.get();
  ASSERT_EQ(Add(*q_, num), 0);
  EXPECT_EQ(read_->watcher().item_count(), 1u);
  p.r.reset();
  EXPECT_EQ(KernelReadItems(), 0u);  // the kernel dropped the item with the file
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  EXPECT_EQ(q_->Change(Ev(num, EVFILT_READ, EV_DELETE)), EBADF);
  EXPECT_EQ(read_->watcher().item_count(), 0u);
}

TEST_F(FdLifetimeTest, ReusedNumberIsANewFile) {
  Pipe a;
  const int num = a.r.get();
  ASSERT_EQ(Add(*q_, num, EVFILT_READ, 0, 1), 0);
  WriteBytes(a.w.get(), 1);  // the old knote is queued
  Quiesce();
  a.r.reset();
  a.w.reset();
  Pipe b;
  ASSERT_EQ(b.r.get(), num);  // the lowest free number again
  WriteBytes(b.w.get(), 2);
  // The old registration reports nothing, from either file.
  EXPECT_TRUE(q_->Collect(8, 100).empty());
  EXPECT_EQ(q_->Change(Ev(num, EVFILT_READ, EV_DELETE)), ENOENT);
}

TEST_F(FdLifetimeTest, EvAddOnAReusedNumberWatchesTheNewFile) {
  Pipe a;
  const int num = a.r.get();
  ASSERT_EQ(Add(*q_, num, EVFILT_READ, 0, 1), 0);  // idle: stays registered
  Quiesce();
  a.r.reset();
  a.w.reset();
  Pipe b;
  ASSERT_EQ(b.r.get(), num);
  WriteBytes(b.w.get(), 3);
  EXPECT_TRUE(q_->Collect(8, 100).empty());  // not the old knote's file
  ASSERT_EQ(Add(*q_, num, EVFILT_READ, 0, 2), 0);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].udata, 2u);
  EXPECT_EQ(evs[0].data, 3);
  // And it is woken by the new file.
  char buf[3];
  ASSERT_EQ(read(b.r.get(), buf, 3), 3);
  EXPECT_TRUE(q_->Collect(8, 0).empty());
  WriteBytes(b.w.get(), 1);
  auto ev = WaitEvent(*q_, num, EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->udata, 2u);
  EXPECT_EQ(ev->data, 1);
}

TEST_F(FdLifetimeTest, BadDescriptorsAreEbadf) {
  int num;
  {
    Pipe p;
    num = p.r.get();
  }
  EXPECT_EQ(Add(*q_, num), EBADF);
  EXPECT_EQ(Add(*q_, num, EVFILT_WRITE), EBADF);
  EXPECT_EQ(q_->Change(Ev(static_cast<uint64_t>(INT_MAX) + 1, EVFILT_READ, EV_ADD)), EBADF);
  EXPECT_EQ(q_->Change(Ev(1ull << 40, EVFILT_WRITE, EV_ADD)), EBADF);
  // Without EV_ADD too (the seed's fd_getfile comes before the knote
  // lookup): EBADF for a number that names no descriptor, ENOENT for an
  // open descriptor without a knote.
  for (uint32_t flags : {EV_DELETE, EV_ENABLE, EV_DISABLE}) {
    EXPECT_EQ(q_->Change(Ev(num, EVFILT_READ, flags)), EBADF) << flags;
    EXPECT_EQ(q_->Change(Ev(num, EVFILT_WRITE, flags)), EBADF) << flags;
    EXPECT_EQ(q_->Change(Ev(static_cast<uint64_t>(INT_MAX) + 1, EVFILT_READ, flags)), EBADF);
  }
  Pipe open_one;
  EXPECT_EQ(q_->Change(Ev(open_one.r.get(), EVFILT_READ, EV_DELETE)), ENOENT);
  EXPECT_EQ(q_->Change(Ev(open_one.r.get(), EVFILT_WRITE, EV_DISABLE)), ENOENT);
}

TEST_F(FdLifetimeTest, Dup2OverTheFdRemovesTheKnote) {
  Pipe a, b;
  ASSERT_EQ(Add(*q_, a.r.get()), 0);
  ASSERT_EQ(dup3(b.r.get(), a.r.get(), O_CLOEXEC), a.r.get());  // another pipe
  WriteBytes(b.w.get(), 1);
  EXPECT_TRUE(q_->Collect(8, 100).empty());
  EXPECT_EQ(q_->Change(Ev(a.r.get(), EVFILT_READ, EV_DELETE)), ENOENT);
  // The same pipe's other end: same inode, other access mode.
  Pipe c;
  ASSERT_EQ(Add(*q_, c.r.get()), 0);
  ASSERT_EQ(dup3(c.w.get(), c.r.get(), O_CLOEXEC), c.r.get());
  EXPECT_EQ(q_->Change(Ev(c.r.get(), EVFILT_READ, EV_DELETE)), ENOENT);
}

// ---- the key-number scheme -----------------------------------------------------

TEST_F(FdLifetimeTest, ThousandsOfRegistrationsCostNoDescriptors) {
  constexpr int kPipes = 5000;
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  // Our 10000 pipe fds may overlap the key range (the harness shares the
  // "daemon's" fd table): enough numbers must be left above them.
  const auto& range = kqd::FdKeyRange::Get();
  ASSERT_TRUE(range.ok());
  if (range.top() < 3 * kPipes + 200) GTEST_SKIP() << "RLIMIT_NOFILE too small";

  std::vector<Pipe> pipes(kPipes);
  for (const Pipe& p : pipes) ASSERT_TRUE(p.r && p.w);
  std::vector<kq_kevent> changes;
  for (const Pipe& p : pipes) changes.push_back(Ev(p.r.get(), EVFILT_READ, EV_ADD));

  const size_t before = CountOpenFds();
  int err = 0;
  ASSERT_EQ(q_->Kevent(changes, nullptr, 0, nullptr, &err), 0);
  ASSERT_EQ(err, 0);
  const size_t after = CountOpenFds();
  // No descriptor per knote; one epoll instance per kShardItems items.
  const size_t shards = (kPipes + kqd::FdWatcher::kShardItems - 1) / kqd::FdWatcher::kShardItems;
  EXPECT_LE(after, before + 2 + shards) << "registrations must not hold descriptors";
  EXPECT_EQ(KernelReadItems(), static_cast<size_t>(kPipes));
  // Each instance holds at most kShardItems items: an identity check (a
  // kcmp, which walks its instance's items) costs the same beside 5000
  // watched files as beside 50.
  EXPECT_EQ(read_->watcher().epoll_fds().size(), shards);
  for (int epfd : read_->watcher().epoll_fds())
    EXPECT_LE(KernelEpollItems(epfd), kqd::FdWatcher::kShardItems);

  WriteBytes(pipes[4321].w.get(), 1);
  auto ev = WaitEvent(*q_, pipes[4321].r.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(q_->Collect(64, 0).size(), 1u);  // just that one
  EXPECT_LE(CountOpenFds(), before + 2 + shards);  // evaluating holds nothing either

  // None of the 5000 files is kept alive.
  for (Pipe& p : pipes) p.r.reset();
  for (Pipe& p : pipes) {
    ASSERT_TRUE(PeerGoneSoon(p.w.get()));
    ASSERT_EQ(write(p.w.get(), "x", 1), -1);
    ASSERT_EQ(errno, EPIPE);
  }
  EXPECT_EQ(KernelReadItems(), 0u);
}

TEST_F(FdLifetimeTest, OneItemPerOpenFileUntilItsLastKnoteGoes) {
  Pipe p;
  ScopedFd dup_r(fcntl(p.r.get(), F_DUPFD_CLOEXEC, 0));  // the same open file
  auto q2 = rt_.NewQueue();
  ASSERT_EQ(Add(*q_, p.r.get()), 0);
  ASSERT_EQ(Add(*q2, p.r.get(), EVFILT_READ, EV_CLEAR), 0);
  ASSERT_EQ(Add(*q_, dup_r.get(), EVFILT_READ, EV_CLEAR), 0);
  EXPECT_EQ(KernelReadItems(), 1u);
  EXPECT_EQ(read_->watcher().item_count(), 1u);
  ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_DELETE)), 0);
  EXPECT_EQ(KernelReadItems(), 1u);
  // The two others are still woken.
  WriteBytes(p.w.get(), 1);
  ASSERT_TRUE(WaitEvent(*q2, p.r.get(), EVFILT_READ));
  ASSERT_TRUE(WaitEvent(*q_, dup_r.get(), EVFILT_READ));
  ASSERT_EQ(q_->Change(Ev(dup_r.get(), EVFILT_READ, EV_DELETE)), 0);
  EXPECT_EQ(KernelReadItems(), 1u);
  WriteBytes(p.w.get(), 1);
  ASSERT_TRUE(WaitEvent(*q2, p.r.get(), EVFILT_READ));
  EXPECT_TRUE(q_->Collect(8, 50).empty());
  q2.reset();  // closing a kqueue deletes its knotes, and the last the item
  EXPECT_EQ(KernelReadItems(), 0u);
  EXPECT_EQ(read_->watcher().item_count(), 0u);
}

TEST_F(FdLifetimeTest, TwoThousandKnotesOnOneFileAcrossTwoThousandQueues) {
  // Linux allows 500 wake-up paths per file through nested epolls; an
  // epoll item per knote made the 501st fail with EINVAL.
  constexpr int kQueues = 2000;
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < kQueues + 500) GTEST_SKIP() << "RLIMIT_NOFILE too small";
  kqd::LimitConfig limits;
  limits.kqueues = 2 * kQueues;  // the default allows a user 1024
  TestRuntime rt(limits);
  std::shared_ptr<kqd::FilterRegistration> reg;
  ASSERT_EQ(rt.get()->filters().Acquire(EVFILT_READ, &reg), 0);
  auto* read = dynamic_cast<kqd::FdFilter*>(reg->ops());
  ASSERT_NE(read, nullptr);
  auto items = [&] { return KernelWatcherItems(read->watcher()); };
  Pipe p;
  std::vector<std::unique_ptr<TestQueue>> queues;
  for (int i = 0; i < kQueues; i++) {
    queues.push_back(rt.NewQueue());
    ASSERT_EQ(Add(*queues.back(), p.r.get(), EVFILT_READ, i % 2 ? EV_CLEAR : 0, i), 0)
        << "knote " << i + 1;
  }
  EXPECT_EQ(items(), 1u);
  WriteBytes(p.w.get(), 2);
  for (int i = 0; i < kQueues; i++) {
    auto ev = WaitEvent(*queues[i], p.r.get(), EVFILT_READ);
    ASSERT_TRUE(ev) << "queue " << i;
    EXPECT_EQ(ev->data, 2);
    EXPECT_EQ(ev->udata, static_cast<uint64_t>(i));
  }
  queues.clear();
  EXPECT_EQ(items(), 0u);
}

TEST_F(FdLifetimeTest, ReopenOfTheSameFileAtTheSameNumberIsANewFile) {
  // A new open of the very same pipe (through /proc/self/fd), with the same
  // access mode, lands on the closed fd's number: same inode, same mode —
  // only the open file tells them apart. BSD removed the knote at close.
  for (int round = 0; round < 20; round++) {
    Pipe p;
    const int num = p.r.get();
    ScopedFd keep(fcntl(p.r.get(), F_DUPFD_CLOEXEC, 100));  // the pipe lives on
    ASSERT_EQ(Add(*q_, num, EVFILT_READ, 0, 1), 0);
    Quiesce();
    p.r.reset();
    const std::string path = "/proc/self/fd/" + std::to_string(keep.get());
    ScopedFd again(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_EQ(again.get(), num);
    WriteBytes(p.w.get(), 1);
    EXPECT_TRUE(q_->Collect(8, 50).empty()) << "round " << round;
    EXPECT_EQ(q_->Change(Ev(num, EVFILT_READ, EV_DELETE)), ENOENT);
    // The new open can be registered, and is watched.
    ASSERT_EQ(Add(*q_, num, EVFILT_READ, 0, 2), 0);
    auto evs = q_->Collect(8, 0);
    ASSERT_EQ(evs.size(), 1u);
    EXPECT_EQ(evs[0].udata, 2u);
    ASSERT_EQ(q_->Change(Ev(num, EVFILT_READ, EV_DELETE)), 0);
  }
}

TEST_F(FdLifetimeTest, DeleteThroughAnotherOpenOfTheInodeSparesItsItem) {
  // Two opens of one FIFO look identical from outside (same inode, same
  // access mode). When the client closes the first and dup2s the second
  // onto its number, deleting the first knote can only be done with the
  // second file: it must not delete the second knote's item.
  const char* dir = getenv("TEST_TMPDIR");
  std::string path = std::string(dir ? dir : "/tmp") + "/fd_lifetime_fifo";
  unlink(path.c_str());
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  ScopedFd x(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ScopedFd y(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ScopedFd w(open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  unlink(path.c_str());
  ASSERT_TRUE(x && y && w);
  ASSERT_EQ(Add(*q_, x.get()), 0);
  ASSERT_EQ(Add(*q_, y.get(), EVFILT_READ, EV_CLEAR), 0);
  EXPECT_EQ(KernelReadItems(), 2u);
  ASSERT_EQ(dup3(y.get(), x.get(), O_CLOEXEC), x.get());  // x's file is gone
  EXPECT_EQ(KernelReadItems(), 1u);
  // The open file tells: x's knote went with its file.
  ASSERT_EQ(q_->Change(Ev(x.get(), EVFILT_READ, EV_DELETE)), ENOENT);
  EXPECT_EQ(KernelReadItems(), 1u);  // y's item survived
  WriteBytes(w.get(), 1);
  auto ev = WaitEvent(*q_, y.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 1);
}

TEST_F(FdLifetimeTest, KeyNumbersAreReused) {
  Pipe p;
  // The first item makes the watcher's first epoll instance (kept).
  ASSERT_EQ(Add(*q_, p.r.get()), 0);
  ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_DELETE)), 0);
  const size_t fds = CountOpenFds();
  for (int i = 0; i < 200; i++) {
    ASSERT_EQ(Add(*q_, p.r.get()), 0);
    ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_DELETE)), 0);
  }
  EXPECT_EQ(KernelReadItems(), 0u);
  EXPECT_LE(CountOpenFds(), fds);  // nothing is held at a key number
}

TEST_F(FdLifetimeTest, ZombieItemDoesNotBlockANewRegistration) {
  // The file lives on through a dup when the watched fd is closed: its item
  // cannot be deleted (no copy of the file can be had by the fd number)...
  Pipe p;
  ScopedFd dup_r(fcntl(p.r.get(), F_DUPFD_CLOEXEC, 0));
  const int num = p.r.get();
  ASSERT_EQ(Add(*q_, num), 0);
  p.r.reset();
  WriteBytes(p.w.get(), 1);  // wakes it: the knote finds its fd closed
  EXPECT_TRUE(q_->Collect(8, 100).empty());
  EXPECT_EQ(q_->Change(Ev(num, EVFILT_READ, EV_DELETE)), EBADF);  // the number is closed
  EXPECT_EQ(KernelReadItems(), 1u);  // the zombie
  // ...and the same open file can still be registered: it adopts the item.
  ASSERT_EQ(Add(*q_, dup_r.get()), 0);
  EXPECT_EQ(KernelReadItems(), 1u);
  auto evs = q_->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].ident, static_cast<uint64_t>(dup_r.get()));
  WriteBytes(p.w.get(), 1);  // and is woken through it
  auto again = WaitEvent(*q_, dup_r.get(), EVFILT_READ);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->data, 2);
  ASSERT_EQ(q_->Change(Ev(dup_r.get(), EVFILT_READ, EV_DELETE)), 0);
  EXPECT_EQ(KernelReadItems(), 0u);  // deleted with a copy of the same file
}

TEST_F(FdLifetimeTest, RegistrationsRaceWithWakeUpsAndCloses) {
  // Wake-ups arrive on the reactor thread while knotes are added, deleted
  // and their fds closed and reused (run under TSan by the test script).
  constexpr int kPipes = 16;
  std::vector<Pipe> pipes(kPipes);
  for (Pipe& p : pipes) {
    SetNonblocking(p.w.get());
    SetNonblocking(p.r.get());
  }
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    while (!stop) {
      for (Pipe& p : pipes) {
        ssize_t n = write(p.w.get(), "x", 1);
        (void)n;  // EAGAIN when full: fine
      }
    }
  });
  auto q2 = rt_.NewQueue();
  char buf[4096];
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  for (int round = 0; std::chrono::steady_clock::now() < end; round++) {
    for (int i = 0; i < kPipes; i++) {
      const int fd = pipes[i].r.get();
      TestQueue& q = (i % 2) ? *q_ : *q2;
      ASSERT_EQ(Add(q, fd, EVFILT_READ, (round % 2) ? EV_CLEAR : 0), 0);
      q.Collect(64, 0);
      ssize_t n = read(fd, buf, sizeof buf);
      (void)n;
      if (round % 3 == 0) {
        // dup2 over the watched number: the same file comes back, atomically
        // (a close first would let the harness's in-process transient copies
        // take the number meanwhile).
        ScopedFd keep(fcntl(fd, F_DUPFD_CLOEXEC, 0));
        ASSERT_EQ(dup3(keep.get(), fd, O_CLOEXEC), fd);
      } else if (round % 3 == 1) {
        q.Change(Ev(fd, EVFILT_READ, EV_DELETE));
      }
    }
  }
  stop = true;
  writer.join();
  q2.reset();
  q_.reset();
  EXPECT_EQ(read_->watcher().item_count(), 0u);
}

}  // namespace
