// Knotes the owner collects itself (ABI 4) at the ioctl level, against a
// private daemon: KQ_IOC_LOCAL_ATTACH and its errors, the daemon's eventfd
// item in the owner's epoll instance (readable exactly while the queue holds
// a knote that is not local), KQ_KEVENT_LOCAL_CHANGES / KQ_CHANGE_LOCAL
// marks, KQ_KEVENT_SKIP_LOCAL scans and waits, other processes sharing the
// queue, and what the owner can do to break it.
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/channel.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/ev.h"
#include "tests/support/raw_kevent.h"

namespace kqd {
namespace testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kTag = 0x5a5a00000000beefull;

// One kevent call with the ABI 4 flags, by KQ_IOC_KEVENT or (inline) by
// KQ_IOC_KEVENT_INLINE_8; timeout_ms < 0 waits forever.
int KeventFlags(int kq, const std::vector<kq_kevent>& changes, kq_kevent* events,
                size_t nevents, long timeout_ms, uint32_t flags, bool inline_call = false) {
  if (timeout_ms >= 0) flags |= KQ_KEVENT_TIMEOUT;
  const int64_t sec = timeout_ms >= 0 ? timeout_ms / 1000 : 0;
  const int64_t nsec = timeout_ms >= 0 ? (timeout_ms % 1000) * 1000000L : 0;
  if (!inline_call) {
    kq_kevent_args a{};
    a.changelist = reinterpret_cast<uint64_t>(changes.data());
    a.nchanges = changes.size();
    a.eventlist = reinterpret_cast<uint64_t>(events);
    a.nevents = nevents;
    a.flags = flags;
    a.timeout_sec = sec;
    a.timeout_nsec = nsec;
    return ioctl(kq, KQ_IOC_KEVENT, &a);
  }
  struct {
    kq_kevent_inline h;
    kq_kevent ev[KQ_KEVENT_INLINE_CAP_8];
  } arg{};
  if (changes.size() > KQ_KEVENT_INLINE_CAP_8 || nevents > KQ_KEVENT_INLINE_CAP_8) abort();
  arg.h.nchanges = static_cast<uint32_t>(changes.size());
  arg.h.nevents = static_cast<uint32_t>(nevents);
  arg.h.flags = flags;
  arg.h.timeout_sec = sec;
  arg.h.timeout_nsec = nsec;
  for (size_t i = 0; i < changes.size(); i++) arg.ev[i] = changes[i];
  int n = ioctl(kq, KQ_IOC_KEVENT_INLINE_8, &arg);
  for (int i = 0; i < n; i++) events[i] = arg.ev[i];
  return n;
}

// A change the owner's library marks as collected locally.
kq_kevent Marked(kq_kevent e) {
  e.reserved = KQ_CHANGE_LOCAL;
  return e;
}

// Applies changes in a LOCAL_CHANGES call; returns 0 or the errno.
int LocalChange(int kq, std::vector<kq_kevent> changes, bool inline_call = false) {
  return KeventFlags(kq, changes, nullptr, 0, 0, KQ_KEVENT_LOCAL_CHANGES, inline_call) < 0
             ? errno
             : 0;
}

int Attach(int kq, int epoll_fd, uint64_t tag = kTag, uint32_t flags = 0,
           uint64_t reserved = 0) {
  kq_local_attach a{};
  a.epoll_fd = epoll_fd;
  a.flags = flags;
  a.tag = tag;
  a.reserved = reserved;
  return ioctl(kq, KQ_IOC_LOCAL_ATTACH, &a) == 0 ? 0 : errno;
}

// The items epoll_wait reports at once (zero timeout).
std::vector<epoll_event> Ready(int ep) {
  epoll_event evs[8];
  int n = epoll_wait(ep, evs, 8, 0);
  if (n < 0) return {};
  return std::vector<epoll_event>(evs, evs + n);
}

// Whether the daemon's item is readable, checking it is the only one.
bool Signalled(int ep) {
  std::vector<epoll_event> r = Ready(ep);
  if (r.size() > 1) ADD_FAILURE() << r.size() << " items ready";
  for (const epoll_event& e : r) {
    EXPECT_EQ(e.data.u64, kTag);
    EXPECT_EQ(e.events, static_cast<uint32_t>(EPOLLIN));
  }
  return !r.empty();
}

class LocalCollection : public SharedDaemonTest {
 protected:
  void SetUp() override {
    SharedDaemonTest::SetUp();
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    ASSERT_GE(ep_, 0);
    ASSERT_EQ(pipe2(pipe_, O_CLOEXEC | O_NONBLOCK), 0);
  }
  void TearDown() override {
    if (ep_ >= 0) close(ep_);
    close(pipe_[0]);
    close(pipe_[1]);
    SharedDaemonTest::TearDown();
  }
  void Fill() { ASSERT_EQ(write(pipe_[1], "x", 1), 1); }
  // The local READ knote on the pipe.
  kq_kevent PipeRead(uint32_t flags = EV_ADD) const {
    return Ev(static_cast<uint64_t>(pipe_[0]), EVFILT_READ, flags, 0, 0, 11);
  }

  int ep_ = -1;
  int pipe_[2] = {-1, -1};
};

TEST_F(LocalCollection, AttachErrors) {
  // Not open in the caller.
  EXPECT_EQ(Attach(kq_, 4000), EBADF);
  EXPECT_EQ(Attach(kq_, -1), EBADF);
  // Not an epoll instance: a pipe, the kqueue itself (our own device).
  EXPECT_EQ(Attach(kq_, pipe_[0]), EINVAL);
  EXPECT_EQ(Attach(kq_, kq_), EINVAL);
  // Nonzero flags or reserved.
  EXPECT_EQ(Attach(kq_, ep_, kTag, 1, 0), EINVAL);
  EXPECT_EQ(Attach(kq_, ep_, kTag, 0, 1), EINVAL);
  // None of these put anything into the instance.
  EXPECT_EQ(Change(kq_, Ev(1, EVFILT_USER, EV_ADD)), 0);
  EXPECT_TRUE(Ready(ep_).empty());

  EXPECT_EQ(Attach(kq_, ep_), 0);
  EXPECT_TRUE(Signalled(ep_));  // the USER knote is not local
  // One owner per queue, even the same process with another instance.
  int ep2 = epoll_create1(EPOLL_CLOEXEC);
  EXPECT_EQ(Attach(kq_, ep_), EBUSY);
  EXPECT_EQ(Attach(kq_, ep2), EBUSY);
  EXPECT_TRUE(Ready(ep2).empty());
  close(ep2);
}

TEST_F(LocalCollection, ForkedChildCannotAttachTheInheritedQueue) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int ep = epoll_create1(0);
    _exit(Attach(kq_, ep) == EBUSY ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(LocalCollection, ChildOfAnUnattachedQueueMayAttachAndThenOwnsIt) {
  Channel ch;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int ep = epoll_create1(0);
    ch.Send(Attach(kq_, ep));
    pause();
    _exit(0);
  }
  EXPECT_EQ(ch.Receive(), 0);
  EXPECT_EQ(Attach(kq_, ep_), EBUSY);
  // The parent is not the owner: its marks are ignored, so its knote is
  // returned by SKIP_LOCAL calls.
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  Fill();
  kq_kevent out[4];
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL), 1);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
}

TEST_F(LocalCollection, ReadableExactlyWhileANonLocalKnoteExists) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  EXPECT_FALSE(Signalled(ep_));  // empty queue

  // A marked pipe READ from the owner: local.
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  EXPECT_FALSE(Signalled(ep_));
  // WRITE too.
  kq_kevent w = Ev(static_cast<uint64_t>(pipe_[1]), EVFILT_WRITE, EV_ADD);
  ASSERT_EQ(LocalChange(kq_, {Marked(w)}), 0);
  EXPECT_FALSE(Signalled(ep_));

  // A timer: readable before the ioctl returns; gone again on EV_DELETE.
  kq_kevent timer = Ev(7, EVFILT_TIMER, EV_ADD, 0, 60000);
  ASSERT_EQ(LocalChange(kq_, {timer}), 0);
  EXPECT_TRUE(Signalled(ep_));
  ASSERT_EQ(LocalChange(kq_, {Ev(7, EVFILT_TIMER, EV_DELETE)}), 0);
  EXPECT_FALSE(Signalled(ep_));

  // A marked timer is never local.
  ASSERT_EQ(LocalChange(kq_, {Marked(timer)}), 0);
  EXPECT_TRUE(Signalled(ep_));
  ASSERT_EQ(Change(kq_, Ev(7, EVFILT_TIMER, EV_DELETE)), 0);
  EXPECT_FALSE(Signalled(ep_));

  // The local READ changed without the mark (or without the call flag):
  // not local any more, until a marked change makes it local again.
  ASSERT_EQ(LocalChange(kq_, {PipeRead()}), 0);
  EXPECT_TRUE(Signalled(ep_));
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  EXPECT_FALSE(Signalled(ep_));
  ASSERT_EQ(Change(kq_, Marked(PipeRead())), 0);  // mark without the call flag
  EXPECT_TRUE(Signalled(ep_));
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  EXPECT_FALSE(Signalled(ep_));

  // Disabled, or deleted: a marked EV_DISABLE leaves it not local.
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead(EV_DISABLE))}), 0);
  EXPECT_TRUE(Signalled(ep_));
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead(EV_ENABLE))}), 0);
  EXPECT_FALSE(Signalled(ep_));
  ASSERT_EQ(LocalChange(kq_, {PipeRead(EV_DELETE)}), 0);
  EXPECT_FALSE(Signalled(ep_));  // only the local WRITE is left
}

TEST_F(LocalCollection, OnlyLevelTriggeredReadWriteWithoutLowatIsLocal) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  const uint32_t not_local_flags[] = {EV_ADD | EV_CLEAR, EV_ADD | EV_ONESHOT,
                                      EV_ADD | EV_DISPATCH, EV_ADD | EV_DISABLE};
  for (uint32_t flags : not_local_flags) {
    ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead(flags))}), 0) << flags;
    EXPECT_TRUE(Signalled(ep_)) << flags;
    ASSERT_EQ(Change(kq_, PipeRead(EV_DELETE)), 0);
    EXPECT_FALSE(Signalled(ep_)) << flags;
  }
  kq_kevent lowat = Marked(Ev(static_cast<uint64_t>(pipe_[0]), EVFILT_READ, EV_ADD,
                              NOTE_LOWAT, 4));
  ASSERT_EQ(LocalChange(kq_, {lowat}), 0);
  EXPECT_TRUE(Signalled(ep_));
  ASSERT_EQ(Change(kq_, PipeRead(EV_DELETE)), 0);
  // A user event, marked: not READ/WRITE.
  ASSERT_EQ(LocalChange(kq_, {Marked(Ev(1, EVFILT_USER, EV_ADD))}), 0);
  EXPECT_TRUE(Signalled(ep_));
}

TEST_F(LocalCollection, MarksWorkThroughTheInlineCommands) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}, /*inline_call=*/true), 0);
  EXPECT_FALSE(Signalled(ep_));
  Fill();
  kq_kevent out[8];
  EXPECT_EQ(KeventFlags(kq_, {}, out, 8, 0, KQ_KEVENT_SKIP_LOCAL, true), 0);
  ASSERT_EQ(KeventFlags(kq_, {}, out, 8, 0, 0, true), 1);
  EXPECT_EQ(out[0].ident, static_cast<uint64_t>(pipe_[0]));
  ASSERT_EQ(LocalChange(kq_, {Ev(1, EVFILT_USER, EV_ADD)}, true), 0);
  EXPECT_TRUE(Signalled(ep_));
}

TEST_F(LocalCollection, AttachAfterKnotesSignalsAtOnce) {
  ASSERT_EQ(Change(kq_, PipeRead()), 0);
  ASSERT_EQ(Attach(kq_, ep_), 0);
  EXPECT_TRUE(Signalled(ep_));  // nothing is local before the attach
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  EXPECT_FALSE(Signalled(ep_));
}

TEST_F(LocalCollection, AnotherProcessesKnoteSignals) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  EXPECT_FALSE(Signalled(ep_));
  Channel ch;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The same descriptor number, the child's own knote (and even marked:
    // the child is not the owner, so the mark is ignored).
    ch.Send(LocalChange(kq_, {Marked(PipeRead())}));
    pause();
    _exit(0);
  }
  EXPECT_EQ(ch.Receive(), 0);
  EXPECT_TRUE(Signalled(ep_));
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
}

TEST_F(LocalCollection, SkipLocalLeavesReadyLocalKnotesQueued) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  Fill();
  kq_kevent out[4];
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL), 0);
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL), 0);
  ASSERT_EQ(KeventFlags(kq_, {}, out, 4, 0, 0), 1);
  EXPECT_EQ(out[0].ident, static_cast<uint64_t>(pipe_[0]));
  EXPECT_EQ(out[0].data, 1);
  // A non-local knote beside it is returned alone by SKIP_LOCAL.
  ASSERT_EQ(Change(kq_, Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR)), 0);
  ASSERT_EQ(Change(kq_, Ev(1, EVFILT_USER, 0, NOTE_TRIGGER)), 0);
  ASSERT_EQ(KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL), 1);
  EXPECT_EQ(out[0].filter, EVFILT_USER);
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, 0), 1);  // the pipe, still there
}

// The daemon does not look at a local knote's file when it wakes (the owner
// collects it); every call that does look sees the file as it is then.
TEST_F(LocalCollection, PlainCallsSeeTheCurrentStateOfLocalKnotes) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  kq_kevent out[4];
  ASSERT_EQ(write(pipe_[1], "abc", 3), 3);
  ASSERT_EQ(KeventFlags(kq_, {}, out, 4, 0, 0), 1);
  EXPECT_EQ(out[0].data, 3);
  EXPECT_FALSE(out[0].flags & EV_EOF);
  char buf[8];
  ASSERT_EQ(read(pipe_[0], buf, sizeof buf), 3);
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, 0), 0);  // the level re-check
  // A byte, then the writer's hang-up, each a wake-up of the daemon's.
  ASSERT_EQ(write(pipe_[1], "d", 1), 1);
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL), 0);
  close(pipe_[1]);
  pipe_[1] = open("/dev/null", O_WRONLY | O_CLOEXEC);  // for TearDown
  ASSERT_EQ(KeventFlags(kq_, {}, out, 4, 0, 0), 1);
  EXPECT_EQ(out[0].data, 1);
  EXPECT_TRUE(out[0].flags & EV_EOF);
  // Again, with the byte read: EOF alone.
  ASSERT_EQ(read(pipe_[0], buf, sizeof buf), 1);
  ASSERT_EQ(KeventFlags(kq_, {}, out, 4, 0, 0), 1);
  EXPECT_EQ(out[0].data, 0);
  EXPECT_TRUE(out[0].flags & EV_EOF);
}

TEST_F(LocalCollection, BlockingSkipLocalIgnoresLocalKnotesButNotOthers) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  // The local pipe becomes ready while the call waits: it stays asleep.
  std::thread writer([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    Fill();
  });
  kq_kevent out[4];
  auto start = Clock::now();
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 300, KQ_KEVENT_SKIP_LOCAL), 0);
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(280));
  writer.join();

  // A timer (not local) wakes it; the ready pipe is still left out.
  start = Clock::now();
  ASSERT_EQ(KeventFlags(kq_, {Ev(9, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 50)}, out, 4, 5000,
                        KQ_KEVENT_SKIP_LOCAL | KQ_KEVENT_LOCAL_CHANGES),
            1);
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(3000));
  EXPECT_EQ(out[0].filter, EVFILT_TIMER);

  // A plain call parked beside a SKIP_LOCAL one still gets the local knote
  // when it becomes ready.
  char c;
  ASSERT_EQ(read(pipe_[0], &c, 1), 1);
  std::thread skipper([this] {
    kq_kevent o[4];
    EXPECT_EQ(KeventFlags(kq_, {}, o, 4, 400, KQ_KEVENT_SKIP_LOCAL), 0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::thread writer2([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Fill();
  });
  start = Clock::now();
  ASSERT_EQ(KeventFlags(kq_, {}, out, 4, 5000, 0), 1);
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(3000));
  EXPECT_EQ(out[0].ident, static_cast<uint64_t>(pipe_[0]));
  writer2.join();
  skipper.join();
}

TEST_F(LocalCollection, SkipLocalFromAnotherProcessIsIgnored) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  Fill();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    kq_kevent out[4];
    int n = KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL);
    _exit(n == 1 && out[0].ident == static_cast<uint64_t>(pipe_[0]) ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(LocalCollection, FlagsWithoutAnOwnerAreAcceptedAndIgnored) {
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  Fill();
  kq_kevent out[4];
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL), 1);
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL, true), 1);
  // Bits beyond ABI 4's stay EINVAL on both commands.
  for (bool inline_call : {false, true}) {
    EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, 0x10, inline_call), -1);
    EXPECT_EQ(errno, EINVAL);
    EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, 0x80000000u, inline_call), -1);
    EXPECT_EQ(errno, EINVAL);
  }
}

// The user's KQ_RES_DAEMON_FDS in use, as KQ_IOC_STAT reports it.
uint64_t DaemonFds(int kq) {
  std::vector<char> buf(1 << 20);
  kq_stat_args a{};
  a.buf = reinterpret_cast<uint64_t>(buf.data());
  a.buf_size = buf.size();
  if (ioctl(kq, KQ_IOC_STAT, &a) < 0) return UINT64_MAX;
  kq_stat_header h;
  std::memcpy(&h, buf.data(), sizeof h);
  size_t off = h.header_size + static_cast<size_t>(h.nqueues) * h.queue_size;
  for (uint32_t i = 0; i < h.nusers; i++, off += h.user_size) {
    kq_stat_user u;
    std::memcpy(&u, buf.data() + off, sizeof u);
    if (u.uid == geteuid()) return u.used[KQ_RES_DAEMON_FDS];
  }
  return 0;
}

TEST_F(LocalCollection, OwnerClosingItsEpollBreaksNothing) {
  ASSERT_EQ(Attach(kq_, ep_), 0);
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  close(ep_);
  ep_ = -1;
  ASSERT_EQ(LocalChange(kq_, {Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR)}), 0);
  ASSERT_EQ(Change(kq_, Ev(1, EVFILT_USER, 0, NOTE_TRIGGER)), 0);
  Fill();
  kq_kevent out[4];
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL), 1);
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, 0), 1);
  ASSERT_EQ(Change(kq_, Ev(1, EVFILT_USER, EV_DELETE)), 0);
  // Still the owner: a new instance cannot be attached.
  int ep2 = epoll_create1(EPOLL_CLOEXEC);
  EXPECT_EQ(Attach(kq_, ep2), EBUSY);
  close(ep2);
}

// Signals of closed queues kept per owner process (docs/abi.md;
// RemoteProcess::kMaxClosedSignals).
constexpr int kMaxClosedSignals = 16;

// Waits up to 5 s for the user's daemon descriptors to reach `want` (a
// release reaches the daemon after close() returns; an exit, after the
// process is reaped).
bool DaemonFdsReach(int kq, uint64_t want) {
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (DaemonFds(kq) != want && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return DaemonFds(kq) == want;
}

// The tags of the items epoll_wait reports at once, sorted.
std::vector<uint64_t> ReadyTags(int ep) {
  epoll_event evs[64];
  int n = epoll_wait(ep, evs, 64, 0);
  std::vector<uint64_t> tags;
  for (int i = 0; i < n; i++) tags.push_back(evs[i].data.u64);
  std::sort(tags.begin(), tags.end());
  return tags;
}

// A queue the owner closes: its item is readable before close() returns
// (the FLUSH), stays readable past the release (the daemon keeps the
// eventfd, still charged to the user), the oldest kept one goes when a
// 17th closes, and all go when the owner exits.
TEST_F(LocalCollection, AClosedQueuesSignalStaysReadableUntilTheOwnerExits) {
  int other = SharedDaemon().OpenKqueue();
  ASSERT_GE(other, 0);
  const uint64_t parent_before = DaemonFds(other);
  ASSERT_NE(parent_before, UINT64_MAX);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int stat = SharedDaemon().OpenKqueue();
    if (ep < 0 || stat < 0) _exit(10);
    if (Change(stat, Ev(1, EVFILT_USER, EV_ADD)) != 0) _exit(11);  // known now
    const uint64_t base = DaemonFds(stat);
    constexpr int kQueues = 20;
    for (int i = 1; i <= kQueues; i++) {
      int kq = SharedDaemon().OpenKqueue();
      if (kq < 0 || Attach(kq, ep, static_cast<uint64_t>(i)) != 0) _exit(12);
      std::vector<uint64_t> before = ReadyTags(ep);
      if (std::count(before.begin(), before.end(), static_cast<uint64_t>(i)) != 0) _exit(13);
      close(kq);
      std::vector<uint64_t> after = ReadyTags(ep);
      if (std::count(after.begin(), after.end(), static_cast<uint64_t>(i)) != 1) _exit(14);
      if (i == 1 && !DaemonFdsReach(stat, base + 1)) _exit(15);
    }
    if (!DaemonFdsReach(stat, base + kMaxClosedSignals)) _exit(16);
    std::vector<uint64_t> kept = ReadyTags(ep);
    std::vector<uint64_t> want;
    for (int i = kQueues - kMaxClosedSignals + 1; i <= kQueues; i++)
      want.push_back(static_cast<uint64_t>(i));
    if (kept != want) _exit(17);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  // Gone with the owner: its kept signals and its pidfds.
  EXPECT_TRUE(DaemonFdsReach(other, parent_before)) << DaemonFds(other) << " vs "
                                                    << parent_before;
  close(other);
}

// A close by anyone but the owner does not raise the owner's item; the
// owner's close of a duplicate raises it until its next call.
TEST_F(LocalCollection, OnlyTheOwnersCloseRaisesTheItemUntilItsNextCall) {
  // CUSE's character device has no flush operation: there the daemon hears
  // only of the last close (the release), not of a duplicate's (docs/abi.md).
  struct stat dev_st;
  if (stat(SharedDaemon().device().c_str(), &dev_st) == 0 && S_ISCHR(dev_st.st_mode))
    GTEST_SKIP() << "no FLUSH on CUSE";
  ASSERT_EQ(Attach(kq_, ep_), 0);
  ASSERT_EQ(LocalChange(kq_, {Marked(PipeRead())}), 0);
  EXPECT_FALSE(Signalled(ep_));
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(close(kq_) == 0 ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_FALSE(Signalled(ep_));
  int copy = dup(kq_);
  ASSERT_GE(copy, 0);
  close(copy);
  EXPECT_TRUE(Signalled(ep_));
  kq_kevent out[4];
  EXPECT_EQ(KeventFlags(kq_, {}, out, 4, 0, KQ_KEVENT_SKIP_LOCAL), 0);
  EXPECT_FALSE(Signalled(ep_));
}

}  // namespace
}  // namespace testing
}  // namespace kqd
