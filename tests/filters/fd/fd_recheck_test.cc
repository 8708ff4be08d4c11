// The cheap looks of pipe knotes (fd_readiness.h KnownPoll): the level
// re-check at collection answers with FIONREAD alone, the hang-up state
// coming from the last evaluation of a wake-up, and EV_ADD takes the poll
// state from the report of the epoll item it just added. Each test pins one
// thing those shortcuts must not get wrong: a number reused between two
// collections, data current after a partial read, a pipe drained or hung up
// (or, for a FIFO, given a writer again) between two collections.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
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
using kqd::testing::ReadBytes;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;
using kqd::testing::WaitEvent;
using kqd::testing::WriteBytes;

class FdRecheckTest : public ::testing::Test {
 protected:
  void SetUp() override { signal(SIGPIPE, SIG_IGN); }

  int Add(TestQueue& q, int fd, uint32_t filter = EVFILT_READ, uint32_t flags = 0) {
    return q.Change(Ev(fd, filter, EV_ADD | flags));
  }
  // The events of one zero-timeout collection, by ident.
  std::map<uint64_t, kq_kevent> Harvest(TestQueue& q, size_t n = 256) {
    std::map<uint64_t, kq_kevent> out;
    for (const kq_kevent& ev : q.Collect(n, 0)) out[ev.ident] = ev;
    return out;
  }
  void Quiesce() { rt_.Quiesce(); }

  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_ = rt_.NewQueue();
};

TEST_F(FdRecheckTest, NumberReusedBetweenTwoCollectionsIsNotTheOldFile) {
  for (int round = 0; round < 50; round++) {
    Pipe a;
    const int num = a.r.get();
    WriteBytes(a.w.get(), 3);
    ASSERT_EQ(Add(*q_, num), 0);
    auto first = Harvest(*q_);
    ASSERT_EQ(first.count(num), 1u);
    EXPECT_EQ(first[num].data, 3);
    Quiesce();
    a.r.reset();
    a.w.reset();
    Pipe b;  // the lowest free number: the old one
    ASSERT_EQ(b.r.get(), num);
    WriteBytes(b.w.get(), 5);
    // The queued level knote is re-checked and found to name another file.
    EXPECT_TRUE(Harvest(*q_).empty()) << "round " << round;
    EXPECT_EQ(q_->Change(Ev(num, EVFILT_READ, EV_DELETE)), ENOENT);
  }
}

TEST_F(FdRecheckTest, DataIsCurrentAfterPartialReads) {
  std::vector<Pipe> pipes(100);  // two epoll shards
  for (auto& p : pipes) {
    WriteBytes(p.w.get(), 50);
    ASSERT_EQ(Add(*q_, p.r.get()), 0);
  }
  std::vector<int64_t> left(pipes.size(), 50);
  for (int round = 1; round <= 10; round++) {
    for (size_t i = 0; i < pipes.size(); i++) {
      const size_t n = (i + round) % 4;  // some untouched, some read
      if (n > 0 && left[i] >= static_cast<int64_t>(n)) {
        ReadBytes(pipes[i].r.get(), n);
        left[i] -= static_cast<int64_t>(n);
      }
    }
    auto evs = Harvest(*q_);
    ASSERT_EQ(evs.size(), pipes.size());
    for (size_t i = 0; i < pipes.size(); i++) {
      EXPECT_EQ(evs[pipes[i].r.get()].data, left[i]) << "round " << round;
      EXPECT_EQ(evs[pipes[i].r.get()].flags & EV_EOF, 0u);
    }
  }
}

TEST_F(FdRecheckTest, PipeDrainedBetweenTwoCollectionsIsNotReturned) {
  std::vector<Pipe> pipes(100);
  for (auto& p : pipes) {
    WriteBytes(p.w.get(), 2);
    ASSERT_EQ(Add(*q_, p.r.get()), 0);
  }
  ASSERT_EQ(Harvest(*q_).size(), pipes.size());
  for (size_t i = 0; i < pipes.size(); i += 2) ReadBytes(pipes[i].r.get(), 2);
  auto evs = Harvest(*q_);
  EXPECT_EQ(evs.size(), pipes.size() / 2);
  for (size_t i = 0; i < pipes.size(); i++)
    EXPECT_EQ(evs.count(pipes[i].r.get()), i % 2 == 0 ? 0u : 1u) << i;
  // Refilled: back (a write wakes the reader, the knote is active again).
  WriteBytes(pipes[0].w.get(), 1);
  auto ev = WaitEvent(*q_, pipes[0].r.get(), EVFILT_READ);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->data, 1);
}

// The race the cached hang-up state must survive: the last writer closes
// right before a collection, and that collection must say EV_EOF (the
// close completed before the call).
TEST_F(FdRecheckTest, HangUpRightBeforeACollectionIsReported) {
  for (int round = 0; round < 300; round++) {
    Pipe p;
    WriteBytes(p.w.get(), 4);
    ASSERT_EQ(Add(*q_, p.r.get()), 0);
    auto before = Harvest(*q_);
    ASSERT_EQ(before.count(p.r.get()), 1u);
    EXPECT_EQ(before[p.r.get()].flags & EV_EOF, 0u);
    p.w.reset();
    auto after = Harvest(*q_);
    ASSERT_EQ(after.count(p.r.get()), 1u) << "round " << round;
    EXPECT_TRUE(after[p.r.get()].flags & EV_EOF) << "round " << round;
    EXPECT_EQ(after[p.r.get()].data, 4);
    ReadBytes(p.r.get(), 4);
    auto drained = Harvest(*q_);
    ASSERT_EQ(drained.count(p.r.get()), 1u);  // EOF stays readable
    EXPECT_TRUE(drained[p.r.get()].flags & EV_EOF);
    EXPECT_EQ(drained[p.r.get()].data, 0);
    ASSERT_EQ(q_->Change(Ev(p.r.get(), EVFILT_READ, EV_DELETE)), 0);
  }
}

// A FIFO's hang-up is not final: a new writer clears it, and the level
// re-check must see that too.
TEST_F(FdRecheckTest, FifoWriterComingBackClearsEof) {
  const char* tmp = getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp != nullptr ? tmp : "/tmp") + "/recheck_fifo";
  unlink(path.c_str());
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  ScopedFd r(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(r);
  ASSERT_EQ(Add(*q_, r.get()), 0);
  for (int round = 0; round < 20; round++) {
    ScopedFd w(open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    ASSERT_TRUE(w);
    WriteBytes(w.get(), 2);
    auto ev = WaitEvent(*q_, r.get(), EVFILT_READ);
    ASSERT_TRUE(ev);
    EXPECT_EQ(ev->flags & EV_EOF, 0u) << "round " << round;
    w.reset();  // the last writer: EOF, data kept
    auto evs = Harvest(*q_);
    ASSERT_EQ(evs.count(r.get()), 1u);
    EXPECT_TRUE(evs[r.get()].flags & EV_EOF) << "round " << round;
    EXPECT_EQ(evs[r.get()].data, 2);
    ScopedFd w2(open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    ASSERT_TRUE(w2);  // a writer again: no EOF any more
    evs = Harvest(*q_);
    ASSERT_EQ(evs.count(r.get()), 1u);
    EXPECT_EQ(evs[r.get()].flags & EV_EOF, 0u) << "round " << round;
    EXPECT_EQ(evs[r.get()].data, 2);
    ReadBytes(r.get(), 2);
    EXPECT_TRUE(Harvest(*q_).empty());
  }
  unlink(path.c_str());
}

// EV_ADD learns the pipe's state from its epoll item's add report: each
// state must come out as a poll() would say it, for a new item and for a
// knote joining an existing one (another queue on the same pipe).
TEST_F(FdRecheckTest, RegistrationSeesTheStateOfANewAndOfASharedItem) {
  auto other = rt_.NewQueue();
  for (int pass = 0; pass < 2; pass++) {
    TestQueue& q = pass == 0 ? *q_ : *other;
    Pipe empty, ready, eof, eof_empty, full;
    WriteBytes(ready.w.get(), 7);
    WriteBytes(eof.w.get(), 3);
    eof.w.reset();
    eof_empty.w.reset();
    fcntl(full.w.get(), F_SETFL, O_NONBLOCK);
    size_t filled = 0;
    for (;;) {
      char buf[4096] = {};
      ssize_t n = write(full.w.get(), buf, sizeof buf);
      if (n <= 0) break;
      filled += static_cast<size_t>(n);
    }
    if (pass == 1) {
      // The first pass's knotes on other pipes are gone with them; join
      // fresh items made by q_ first.
      for (Pipe* p : {&empty, &ready, &eof, &eof_empty}) ASSERT_EQ(Add(*q_, p->r.get()), 0);
      ASSERT_EQ(Add(*q_, full.w.get(), EVFILT_WRITE), 0);
      ASSERT_EQ(Add(*q_, empty.w.get(), EVFILT_WRITE), 0);
    }
    ASSERT_EQ(Add(q, empty.r.get()), 0);
    ASSERT_EQ(Add(q, ready.r.get()), 0);
    ASSERT_EQ(Add(q, eof.r.get()), 0);
    ASSERT_EQ(Add(q, eof_empty.r.get()), 0);
    ASSERT_EQ(Add(q, full.w.get(), EVFILT_WRITE), 0);
    ASSERT_EQ(Add(q, empty.w.get(), EVFILT_WRITE), 0);
    auto evs = Harvest(q);
    EXPECT_EQ(evs.count(empty.r.get()), 0u) << "pass " << pass;
    EXPECT_EQ(evs.count(full.w.get()), 0u) << "pass " << pass;
    ASSERT_EQ(evs.count(ready.r.get()), 1u) << "pass " << pass;
    EXPECT_EQ(evs[ready.r.get()].data, 7);
    EXPECT_EQ(evs[ready.r.get()].flags & EV_EOF, 0u);
    ASSERT_EQ(evs.count(eof.r.get()), 1u) << "pass " << pass;
    EXPECT_EQ(evs[eof.r.get()].data, 3);
    EXPECT_TRUE(evs[eof.r.get()].flags & EV_EOF);
    ASSERT_EQ(evs.count(eof_empty.r.get()), 1u) << "pass " << pass;
    EXPECT_EQ(evs[eof_empty.r.get()].data, 0);
    EXPECT_TRUE(evs[eof_empty.r.get()].flags & EV_EOF);
    ASSERT_EQ(evs.count(empty.w.get()), 1u) << "pass " << pass;
    EXPECT_EQ(evs[empty.w.get()].data, fcntl(empty.w.get(), F_GETPIPE_SZ));
    EXPECT_GT(filled, 0u);
  }
}

TEST_F(FdRecheckTest, SocketRegistrationSeesDataAndEof) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  WriteBytes(b.get(), 6);
  ASSERT_EQ(Add(*q_, a.get()), 0);
  auto evs = Harvest(*q_);
  ASSERT_EQ(evs.count(a.get()), 1u);
  EXPECT_EQ(evs[a.get()].data, 6);
  EXPECT_EQ(evs[a.get()].flags & EV_EOF, 0u);
  ASSERT_EQ(q_->Change(Ev(a.get(), EVFILT_READ, EV_DELETE)), 0);
  b.reset();
  ASSERT_EQ(Add(*q_, a.get()), 0);
  evs = Harvest(*q_);
  ASSERT_EQ(evs.count(a.get()), 1u);
  EXPECT_EQ(evs[a.get()].data, 6);
  EXPECT_TRUE(evs[a.get()].flags & EV_EOF);
}

}  // namespace
