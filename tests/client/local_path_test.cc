// The library's fast path (ABI 4, local collection; client/README.md): a
// queue made by kqueue() in this process collects its level-triggered
// READ/WRITE knotes of pipes and FIFOs from an epoll instance of its own.
// Every test runs the same steps on a queue with the fast path and on one
// without it (made with $KQUEUE_LOCAL=0) and compares the answers field by
// field; where the fast path must have been taken, the test also counts
// the kevent ioctls the library sent (this binary defines ioctl(), which
// the statically linked library calls), and where the number of system
// calls is the point, every ioctl, fstat and epoll wait too (defined here
// likewise; no seccomp). With a daemon older than ABI 4 (or
// in the _ioctl run, where both queues are ordinary) the comparisons still
// run and the counts are not asserted.
#include <sys/event.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/client/client_test_support.h"

namespace {

std::atomic<int> g_kevent_ioctls{0};  // kevent ioctls sent (any queue)
std::atomic<int> g_attached{0};       // successful KQ_IOC_LOCAL_ATTACH
std::atomic<int> g_ioctls{0};         // every ioctl (any descriptor)
std::atomic<int> g_fstats{0};         // every fstat
std::atomic<int> g_epoll_waits{0};    // epoll_wait and epoll_pwait2

bool IsKevent(unsigned long request) {
  return request == KQ_IOC_KEVENT || request == KQ_IOC_KEVENT_INLINE_1 ||
         request == KQ_IOC_KEVENT_INLINE_8 || request == KQ_IOC_KEVENT_INLINE_64 ||
         request == KQ_IOC_KEVENT_INLINE_408;
}

}  // namespace

extern "C" int ioctl(int fd, unsigned long request, ...) __THROW {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (IsKevent(request)) g_kevent_ioctls++;
  g_ioctls++;
  int rc = static_cast<int>(syscall(SYS_ioctl, fd, request, arg));
  if (request == KQ_IOC_LOCAL_ATTACH && rc == 0) g_attached++;
  return rc;
}

extern "C" int fstat(int fd, struct stat* st) __THROW {
  g_fstats++;
  return static_cast<int>(syscall(SYS_fstat, fd, st));
}

extern "C" int fstat64(int fd, struct stat64* st) __THROW {
  g_fstats++;
  return static_cast<int>(syscall(SYS_fstat, fd, st));
}

extern "C" int epoll_wait(int ep, struct epoll_event* events, int max, int ms) {
  g_epoll_waits++;
  return static_cast<int>(syscall(SYS_epoll_pwait, ep, events, max, ms, nullptr, 0));
}

extern "C" int epoll_pwait2(int ep, struct epoll_event* events, int max,
                            const struct timespec* timeout, const sigset_t* mask) {
  g_epoll_waits++;
#ifdef SYS_epoll_pwait2
  return static_cast<int>(syscall(SYS_epoll_pwait2, ep, events, max, timeout, mask, _NSIG / 8));
#else
  errno = ENOSYS;
  return -1;
#endif
}

namespace kqd {
namespace client_test {
namespace {

using std::chrono::milliseconds;

const struct timespec kZero = {0, 0};

// A kqueue made with $KQUEUE_LOCAL set to "0" (no fast path) or as the
// environment has it; *fast says whether the library attached it.
int MakeQueue(bool allow_local, bool* fast) {
  const char* was = getenv("KQUEUE_LOCAL");
  std::string saved = was != nullptr ? was : "";
  if (!allow_local) setenv("KQUEUE_LOCAL", "0", 1);
  const int before = g_attached.load();
  int kq = kqueue();
  *fast = g_attached.load() > before;
  if (!allow_local) {
    if (was != nullptr) {
      setenv("KQUEUE_LOCAL", saved.c_str(), 1);
    } else {
      unsetenv("KQUEUE_LOCAL");
    }
  }
  return kq;
}

bool Less(const struct kevent& a, const struct kevent& b) {
  if (a.ident != b.ident) return a.ident < b.ident;
  return a.filter < b.filter;
}

std::string Show(const struct kevent& e) {
  char buf[160];
  snprintf(buf, sizeof buf, "{ident %lu filter %u flags %#x fflags %#x data %ld udata %p}",
           static_cast<unsigned long>(e.ident), e.filter, e.flags, e.fflags,
           static_cast<long>(e.data), e.udata);
  return buf;
}

class LocalPath : public ClientTest {
 protected:
  void SetUp() override {
    ClientTest::SetUp();
    local_ = MakeQueue(true, &fast_);
    ASSERT_GE(local_, 0) << strerror(errno);
    bool ordinary_fast = false;
    ioctl_ = MakeQueue(false, &ordinary_fast);
    ASSERT_GE(ioctl_, 0) << strerror(errno);
    ASSERT_FALSE(ordinary_fast);
  }
  void TearDown() override {
    if (local_ >= 0) close(local_);
    if (ioctl_ >= 0) close(ioctl_);
    for (int fd : fds_) close(fd);
  }

  // A pipe whose ends are closed by TearDown (unless closed before).
  void Pipe(int p[2]) {
    ASSERT_EQ(pipe2(p, O_NONBLOCK), 0);
    fds_.push_back(p[0]);
    fds_.push_back(p[1]);
  }
  void Close(int fd) {
    close(fd);
    fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
  }

  // The same changes on both queues, with room for `nevents`: both answers
  // must be equal, field by field.
  int Change(std::vector<struct kevent> changes, size_t nevents = 0) {
    std::vector<struct kevent> a(nevents + 1), b(nevents + 1);
    int ra = kevent(local_, changes.data(), changes.size(), a.data(), nevents, &kZero);
    int ea = errno;
    int rb = kevent(ioctl_, changes.data(), changes.size(), b.data(), nevents, &kZero);
    int eb = errno;
    EXPECT_EQ(ra, rb);
    if (ra < 0 && rb < 0) EXPECT_EQ(ea, eb);
    for (int i = 0; i < std::min(ra, rb); i++)
      EXPECT_EQ(memcmp(&a[i], &b[i], sizeof a[i]), 0) << Show(a[i]) << " vs " << Show(b[i]);
    return ra;
  }

  // A zero-timeout harvest of kq, sorted.
  static std::vector<struct kevent> Harvest(int kq, size_t room = 16) {
    std::vector<struct kevent> out(room);
    int n = kevent(kq, nullptr, 0, out.data(), room, &kZero);
    EXPECT_GE(n, 0) << strerror(errno);
    out.resize(n < 0 ? 0 : n);
    std::sort(out.begin(), out.end(), Less);
    return out;
  }

  // Harvests both queues; the answers must be equal field by field. Counts
  // the local queue's kevent ioctls in *ioctls.
  std::vector<struct kevent> Same(int* ioctls = nullptr) {
    const int before = g_kevent_ioctls.load();
    std::vector<struct kevent> a = Harvest(local_);
    if (ioctls != nullptr) *ioctls = g_kevent_ioctls.load() - before;
    std::vector<struct kevent> b = Harvest(ioctl_);
    EXPECT_EQ(a.size(), b.size());
    for (size_t i = 0; i < std::min(a.size(), b.size()); i++)
      EXPECT_EQ(memcmp(&a[i], &b[i], sizeof a[i]), 0) << Show(a[i]) << " vs " << Show(b[i]);
    return a;
  }

  // With the fast path, a harvest of local knotes only asks no daemon.
  void ExpectLocal(int ioctls) {
    if (fast_) EXPECT_EQ(ioctls, 0) << "the harvest went to the daemon";
  }

  int local_ = -1;
  int ioctl_ = -1;
  bool fast_ = false;
  std::vector<int> fds_;
};

TEST_F(LocalPath, AQueueOfAnAbi4DaemonHasTheFastPath) {
  struct kq_version version;
  memset(&version, 0, sizeof version);
  ASSERT_EQ(ioctl(local_, KQ_IOC_VERSION, &version), 0) << strerror(errno);
  const char* off = getenv("KQUEUE_LOCAL");
  if (off != nullptr && strcmp(off, "0") == 0) {
    EXPECT_FALSE(fast_);
  } else if (version.abi_version >= 4) {
    EXPECT_TRUE(fast_);
  }
}

TEST_F(LocalPath, ReadOfAPipeFieldByField) {
  int p[2];
  Pipe(p);
  void* udata = reinterpret_cast<void*>(0x1234);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD, 0, 0, udata)}), 0);
  int ioctls = -1;
  EXPECT_TRUE(Same(&ioctls).empty());
  ExpectLocal(ioctls);
  ASSERT_EQ(write(p[1], "hello", 5), 5);
  std::vector<struct kevent> got = Same(&ioctls);
  ExpectLocal(ioctls);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ident, static_cast<uintptr_t>(p[0]));
  EXPECT_EQ(got[0].data, 5);
  EXPECT_EQ(got[0].udata, udata);
  EXPECT_FALSE(got[0].flags & EV_EOF);
  // The writer goes: EV_EOF with the bytes still there.
  Close(p[1]);
  got = Same(&ioctls);
  ExpectLocal(ioctls);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].flags & EV_EOF);
  EXPECT_EQ(got[0].data, 5);
  // Drained: still EV_EOF, data 0.
  char buf[16];
  ASSERT_EQ(read(p[0], buf, sizeof buf), 5);
  got = Same();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].flags & EV_EOF);
  EXPECT_EQ(got[0].data, 0);
}

TEST_F(LocalPath, WriteOfAPipeFieldByField) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[1], EVFILT_WRITE, EV_ADD | EV_ENABLE, 0, 0, this)}), 0);
  int ioctls = -1;
  std::vector<struct kevent> got = Same(&ioctls);
  ExpectLocal(ioctls);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, fcntl(p[1], F_GETPIPE_SZ));
  char chunk[1000] = {0};
  ASSERT_EQ(write(p[1], chunk, sizeof chunk), 1000);
  got = Same(&ioctls);
  ExpectLocal(ioctls);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, fcntl(p[1], F_GETPIPE_SZ) - 1000);
  // Full: no event on either path.
  while (write(p[1], chunk, sizeof chunk) > 0) {
  }
  EXPECT_TRUE(Same().empty());
  // The reader goes: EV_EOF, data 0.
  Close(p[0]);
  got = Same(&ioctls);
  ExpectLocal(ioctls);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].flags & EV_EOF);
  EXPECT_EQ(got[0].data, 0);
}

TEST_F(LocalPath, ManyReadyPipesInOneCall) {
  // More than the library reads on its stack (64 reports): one call, each
  // pipe once, as the daemon answers.
  std::vector<int> readers;
  std::vector<struct kevent> changes;
  for (int i = 0; i < 150; i++) {
    int p[2];
    Pipe(p);
    ASSERT_EQ(write(p[1], "abc", 1 + i % 3), 1 + i % 3);
    changes.push_back(Ev(p[0], EVFILT_READ, EV_ADD, 0, 0, reinterpret_cast<void*>(i + 1)));
  }
  ASSERT_EQ(Change(changes), 0);
  std::vector<struct kevent> a(256), b(256);
  const int before = g_kevent_ioctls.load();
  int na = kevent(local_, nullptr, 0, a.data(), a.size(), &kZero);
  ExpectLocal(g_kevent_ioctls.load() - before);
  int nb = kevent(ioctl_, nullptr, 0, b.data(), b.size(), &kZero);
  ASSERT_EQ(na, 150);
  ASSERT_EQ(nb, 150);
  a.resize(na);
  b.resize(nb);
  std::sort(a.begin(), a.end(), Less);
  std::sort(b.begin(), b.end(), Less);
  for (int i = 0; i < 150; i++)
    EXPECT_EQ(memcmp(&a[i], &b[i], sizeof a[i]), 0) << Show(a[i]) << " vs " << Show(b[i]);
  // Less room than ready: the room is filled.
  EXPECT_EQ(kevent(local_, nullptr, 0, a.data(), 100, &kZero), 100);
}

TEST_F(LocalPath, LevelTriggeredDataIsCurrent) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(p[1], "abc", 3), 3);
  int ioctls = -1;
  for (int round = 0; round < 3; round++) {
    std::vector<struct kevent> got = Same(&ioctls);
    ExpectLocal(ioctls);
    ASSERT_EQ(got.size(), 1u) << "round " << round;
    EXPECT_EQ(got[0].data, 3);
  }
  ASSERT_EQ(write(p[1], "de", 2), 2);
  std::vector<struct kevent> got = Same();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, 5);
  char buf[8];
  ASSERT_EQ(read(p[0], buf, sizeof buf), 5);
  EXPECT_TRUE(Same(&ioctls).empty());
  ExpectLocal(ioctls);
}

TEST_F(LocalPath, FlagsAsTheDaemonReportsThem) {
  // The daemon reports the flags of the EV_ADD that made the knote: a
  // receipt, an EV_DISABLE then EV_ADD|EV_ENABLE, a new udata.
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD | EV_RECEIPT, 0, 0, this)}, 4), 1);
  ASSERT_EQ(write(p[1], "x", 1), 1);
  std::vector<struct kevent> got = Same();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_DISABLE)}), 0);
  EXPECT_TRUE(Same().empty());
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD | EV_ENABLE, 0, 0, &got)}), 0);
  int ioctls = -1;
  got = Same(&ioctls);
  ExpectLocal(ioctls);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].udata, static_cast<void*>(&got));
  // Made disabled, then enabled by an EV_ADD: its flags keep EV_DISABLE.
  int q[2];
  Pipe(q);
  ASSERT_EQ(write(q[1], "yy", 2), 2);
  ASSERT_EQ(Change({Ev(q[0], EVFILT_READ, EV_ADD | EV_DISABLE)}), 0);
  ASSERT_EQ(Change({Ev(q[0], EVFILT_READ, EV_ADD | EV_ENABLE)}), 0);
  EXPECT_EQ(Same().size(), 2u);
  // EV_CLEAR is never collected here; its flags stay with the knote.
  int r[2];
  Pipe(r);
  ASSERT_EQ(Change({Ev(r[0], EVFILT_READ, EV_ADD | EV_CLEAR)}), 0);
  ASSERT_EQ(Change({Ev(r[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(r[1], "z", 1), 1);
  EXPECT_EQ(Same().size(), 3u);
  EXPECT_EQ(Same().size(), 2u);  // the EV_CLEAR knote fired once
}

// Both queues answer the same changes with room for `nevents`: the events,
// sorted, must be equal field by field (each path may order them its way).
#define EXPECT_SAME_SORTED_ANSWER(changes, nevents)                                         \
  do {                                                                                      \
    std::vector<struct kevent> a_(nevents), b_(nevents);                                    \
    int ra_ = kevent(local_, (changes).data(), (changes).size(), a_.data(), nevents, &kZero); \
    int rb_ = kevent(ioctl_, (changes).data(), (changes).size(), b_.data(), nevents, &kZero); \
    ASSERT_EQ(ra_, rb_);                                                                    \
    a_.resize(ra_ < 0 ? 0 : ra_);                                                           \
    b_.resize(rb_ < 0 ? 0 : rb_);                                                           \
    std::sort(a_.begin(), a_.end(), Less);                                                  \
    std::sort(b_.begin(), b_.end(), Less);                                                  \
    for (size_t i_ = 0; i_ < a_.size(); i_++)                                               \
      EXPECT_EQ(memcmp(&a_[i_], &b_[i_], sizeof a_[i_]), 0)                                 \
          << Show(a_[i_]) << " vs " << Show(b_[i_]);                                        \
  } while (0)

TEST_F(LocalPath, ACallWithChangesGetsLocalEventsBesideTheDaemons) {
  // Found by local_differential_test (seed 9): a call with changes whose
  // SKIP_LOCAL call got an event of a knote the daemon collects (EV_CLEAR)
  // must still add the ready local ones, as the daemon's answer has both.
  int p[2];
  Pipe(p);
  int q[2];
  Pipe(q);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(p[1], "abcd", 4), 4);
  std::vector<struct kevent> changes = {Ev(q[1], EVFILT_WRITE, EV_ADD | EV_CLEAR)};
  EXPECT_SAME_SORTED_ANSWER(changes, 8);
  // Again with a level-triggered knote of the daemon's (NOTE_LOWAT) that
  // stays ready: both events in every call with changes.
  int r[2];
  Pipe(r);
  changes = {Ev(r[1], EVFILT_WRITE, EV_ADD, NOTE_LOWAT, 1)};
  EXPECT_SAME_SORTED_ANSWER(changes, 8);
  int s[2];
  Pipe(s);
  changes = {Ev(s[0], EVFILT_READ, EV_ADD)};
  EXPECT_SAME_SORTED_ANSWER(changes, 8);
  EXPECT_EQ(Same().size(), 2u);
}

TEST_F(LocalPath, TheDaemonsItemTakesNoLocalEventsRoom) {
  // Found by local_differential_test (seed 9): room for the daemon's event
  // and one local one; the daemon's item, readable in the epoll instance
  // before the local pipe, must not take the local event's place.
  int p[2];
  Pipe(p);
  int q[2];
  Pipe(q);
  int r[2];
  Pipe(r);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(Change({Ev(q[1], EVFILT_WRITE, EV_ADD, NOTE_LOWAT, 1)}), 0);
  ASSERT_EQ(write(p[1], "abcd", 4), 4);
  std::vector<struct kevent> changes = {Ev(r[0], EVFILT_READ, EV_ADD)};
  EXPECT_SAME_SORTED_ANSWER(changes, 2);
  EXPECT_SAME_SORTED_ANSWER(changes, 2);
  EXPECT_EQ(Same().size(), 2u);
}

TEST_F(LocalPath, AnswersHaveReservedZeroAfterTheFastPathGivesUp) {
  // Found by local_differential_test (seed 1698094932): an error for a
  // knote the call changes twice sends the queue to the ordinary path; the
  // answers after it must carry `reserved` zero (zero on output), neither
  // the KQ_CHANGE_LOCAL mark the library sent nor the caller's word.
  int p[2];
  Pipe(p);
  std::vector<struct kevent> changes = {
      Ev(p[1], EVFILT_WRITE, EV_DISABLE, 0, 0, reinterpret_cast<void*>(2)),
      Ev(p[1], EVFILT_WRITE, EV_ADD | EV_RECEIPT)};
  EXPECT_EQ(Change(changes, 2), 2);
  // The same with the caller's `reserved` (the padding after fflags) set:
  // ignored on input, zero in the answers of both paths.
  int q[2];
  Pipe(q);
  changes = {Ev(q[1], EVFILT_WRITE, EV_DISABLE), Ev(q[1], EVFILT_WRITE, EV_ADD | EV_RECEIPT),
             Ev(q[0], EVFILT_READ, EV_ADD | EV_RECEIPT)};
  const uint32_t junk = 0xdeadbeef;
  for (struct kevent& c : changes)
    memcpy(reinterpret_cast<char*>(&c) + offsetof(struct kq_kevent, reserved), &junk, sizeof junk);
  for (int kq : {local_, ioctl_}) {
    struct kevent out[4];
    memset(out, 0xff, sizeof out);
    ASSERT_EQ(kevent(kq, changes.data(), changes.size(), out, 4, &kZero), 3);
    for (int i = 0; i < 3; i++) {
      const struct kevent& e = out[i];
      uint32_t reserved = 1;
      memcpy(&reserved, reinterpret_cast<const char*>(&e) + offsetof(struct kq_kevent, reserved),
             sizeof reserved);
      EXPECT_EQ(e.flags, EV_ERROR) << Show(e);
      EXPECT_EQ(reserved, 0u) << (kq == local_ ? "fast path " : "ordinary path ") << Show(e);
    }
  }
}

TEST_F(LocalPath, ChangesThatFailKnownlyKeepTheFastPath) {
  // What local_differential_test saw send most queues to the ordinary path
  // for good although the library can tell what the daemon did.
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(p[1], "abc", 3), 3);
  int ioctls = -1;
  EXPECT_EQ(Same(&ioctls).size(), 1u);
  ExpectLocal(ioctls);
  // One change, no room: the call's error is that change's.
  int q[2];
  Pipe(q);
  EXPECT_EQ(Change({Ev(q[0], EVFILT_READ, EV_DELETE)}, 0), -1);
  EXPECT_EQ(Same(&ioctls).size(), 1u);
  ExpectLocal(ioctls);
  // ENOENT for a knote there is none of, then its EV_ADD in the same call.
  EXPECT_EQ(Change({Ev(q[0], EVFILT_READ, EV_DISABLE), Ev(q[0], EVFILT_READ, EV_ADD)}, 4), 1);
  ASSERT_EQ(write(q[1], "de", 2), 2);
  EXPECT_EQ(Same(&ioctls).size(), 2u);
  ExpectLocal(ioctls);
  // A knote added, then added again with a receipt: the receipt is the
  // second change's.
  int r[2];
  Pipe(r);
  EXPECT_EQ(Change({Ev(r[0], EVFILT_READ, EV_ADD), Ev(r[0], EVFILT_READ, EV_ADD | EV_RECEIPT)}, 4),
            1);
  ASSERT_EQ(write(r[1], "f", 1), 1);
  EXPECT_EQ(Same(&ioctls).size(), 3u);
  ExpectLocal(ioctls);
}

TEST_F(LocalPath, AFailedChangeWithATwinInTheCallKeepsTheFastPath) {
  // The answers tell the two changes of one knote apart by udata: each
  // outcome is known, and the later one is read from the knote as the
  // failed one left it (none).
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(p[1], "abc", 3), 3);
  int gone[2];
  Pipe(gone);
  Close(gone[0]);
  EXPECT_EQ(Change({Ev(gone[1], EVFILT_WRITE, EV_ADD, 0, 0, reinterpret_cast<void*>(1)),
                    Ev(gone[1], EVFILT_WRITE, EV_ADD, 0, 0, reinterpret_cast<void*>(2))},
                   4),
            2);
  int ioctls = -1;
  EXPECT_EQ(Same(&ioctls).size(), 1u);
  ExpectLocal(ioctls);
}

TEST_F(LocalPath, AFailingChangelistWithoutRoomKeepsTheFastPath) {
  // No room for answers: the first failing change fails the call, the
  // changes before it applied, the ones after it not (a receipt stops the
  // list too); the library sends such a list one change at a time so that
  // it knows which applied.
  int a[2], b[2], c[2];
  Pipe(a);
  Pipe(b);
  Pipe(c);
  ASSERT_EQ(write(a[1], "1", 1), 1);
  ASSERT_EQ(write(c[1], "3", 1), 1);
  EXPECT_EQ(Change({Ev(a[0], EVFILT_READ, EV_ADD), Ev(b[0], EVFILT_READ, EV_DELETE),
                    Ev(c[0], EVFILT_READ, EV_ADD)},
                   0),
            -1);
  int ioctls = -1;
  EXPECT_EQ(Same(&ioctls).size(), 1u);
  ExpectLocal(ioctls);
  EXPECT_EQ(Change({Ev(b[0], EVFILT_READ, EV_ADD | EV_RECEIPT), Ev(c[0], EVFILT_READ, EV_ADD)}, 0),
            0);
  ASSERT_EQ(write(b[1], "2", 1), 1);
  EXPECT_EQ(Same(&ioctls).size(), 2u);
  ExpectLocal(ioctls);
}

TEST_F(LocalPath, ErrorsAndReceiptsAsBefore) {
  int p[2];
  Pipe(p);
  Close(p[0]);
  // A write end whose reader is gone: EBADF, answered alike.
  std::vector<struct kevent> changes = {Ev(p[1], EVFILT_WRITE, EV_ADD, 0, 0, this),
                                        Ev(9999, EVFILT_READ, EV_ADD)};
  EXPECT_EQ(Change(changes, 4), 2);
  // No room for the answer: the call fails with the error.
  EXPECT_EQ(Change({Ev(p[1], EVFILT_WRITE, EV_ADD)}, 0), -1);
  // nevents = 0 with a receipt: applied, nothing returned.
  int q[2];
  Pipe(q);
  EXPECT_EQ(Change({Ev(q[0], EVFILT_READ, EV_ADD | EV_RECEIPT)}, 0), 0);
  ASSERT_EQ(write(q[1], "x", 1), 1);
  EXPECT_EQ(Same().size(), 1u);
  // EV_DELETE of what is not there: ENOENT.
  EXPECT_EQ(Change({Ev(q[1], EVFILT_READ, EV_DELETE)}, 2), 1);
}

TEST_F(LocalPath, DeleteThenNoEvent) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(p[1], "x", 1), 1);
  EXPECT_EQ(Same().size(), 1u);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_DELETE)}), 0);
  int ioctls = -1;
  EXPECT_TRUE(Same(&ioctls).empty());
  ExpectLocal(ioctls);
  // And back again.
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  EXPECT_EQ(Same().size(), 1u);
}

TEST_F(LocalPath, ClosedAndReusedNumberGivesNoWrongEvent) {
  int a[2], b[2];
  Pipe(a);
  Pipe(b);
  const int n = a[0];
  ASSERT_EQ(Change({Ev(n, EVFILT_READ, EV_ADD)}), 0);
  // The number now names another pipe's read end; the old file is gone.
  ASSERT_EQ(dup2(b[0], n), n);
  ASSERT_EQ(write(b[1], "x", 1), 1);
  EXPECT_TRUE(Same().empty());
  // Registered anew, it is that pipe's.
  ASSERT_EQ(Change({Ev(n, EVFILT_READ, EV_ADD)}), 0);
  std::vector<struct kevent> got = Same();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, 1);
}

TEST_F(LocalPath, GhostOfAFileThatLivesOnGivesNoWrongEvent) {
  int a[2], b[2];
  Pipe(a);
  Pipe(b);
  const int n = a[0];
  ASSERT_EQ(Change({Ev(n, EVFILT_READ, EV_ADD)}), 0);
  // The old read end lives on under another number (its epoll item stays),
  // and n names another pipe: the old pipe's data is no event of n.
  int keep = dup(n);
  ASSERT_GE(keep, 0);
  fds_.push_back(keep);
  ASSERT_EQ(dup2(b[0], n), n);
  ASSERT_EQ(write(a[1], "old", 3), 3);
  EXPECT_TRUE(Harvest(local_).empty());
  EXPECT_TRUE(Harvest(ioctl_).empty());
  ASSERT_EQ(write(b[1], "x", 1), 1);
  EXPECT_TRUE(Same().empty());
  // The queue still works (through the daemon, for good).
  ASSERT_EQ(Change({Ev(n, EVFILT_READ, EV_ADD)}), 0);
  std::vector<struct kevent> got = Same();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, 1);
}

TEST_F(LocalPath, ATimerSendsCallsToTheDaemonUntilDeleted) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(write(p[1], "x", 1), 1);
  struct kevent changes[2] = {Ev(p[0], EVFILT_READ, EV_ADD), Ev(77, EVFILT_TIMER, EV_ADD, 0, 20)};
  ASSERT_EQ(kevent(local_, changes, 2, nullptr, 0, &kZero), 0);
  // The timer fires: the daemon answered.
  bool timer = false, pipe_seen = false;
  const int before = g_kevent_ioctls.load();
  const struct timespec second = {1, 0};
  // (The pipe is ready all along: each call returns at once.)
  const int64_t start = NowMs();
  while (!timer && NowMs() - start < 3000) {
    struct kevent out[4];
    int n = kevent(local_, nullptr, 0, out, 4, &second);
    ASSERT_GE(n, 0) << strerror(errno);
    for (int j = 0; j < n; j++) {
      timer |= out[j].filter == EVFILT_TIMER;
      pipe_seen |= out[j].filter == EVFILT_READ;
    }
  }
  EXPECT_TRUE(timer);
  EXPECT_TRUE(pipe_seen);
  EXPECT_GT(g_kevent_ioctls.load(), before);
  struct kevent del = Ev(77, EVFILT_TIMER, EV_DELETE);
  ASSERT_EQ(kevent(local_, &del, 1, nullptr, 0, &kZero), 0);
  // Back on the fast path.
  int ioctls = -1;
  const int again = g_kevent_ioctls.load();
  std::vector<struct kevent> got = Harvest(local_);
  ioctls = g_kevent_ioctls.load() - again;
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].filter, static_cast<uint32_t>(EVFILT_READ));
  ExpectLocal(ioctls);
}

TEST_F(LocalPath, ACallWithChangesReportsReadyPipesBesideTheDaemonsEvents) {
  // A socket's write knote (the daemon's, always ready) and a ready pipe
  // (local). An event loop's calls carry changes; each must report both,
  // as the ordinary path does: the pipe is not left for a later call (with
  // a change in every call, it would never come).
  int p[2];
  Pipe(p);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  fds_.push_back(sv[0]);
  fds_.push_back(sv[1]);
  ASSERT_EQ(write(p[1], "xy", 2), 2);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD, 0, 0, this), Ev(sv[0], EVFILT_WRITE, EV_ADD)}),
            0);
  for (int round = 0; round < 4; round++) {
    for (int kq : {local_, ioctl_}) {
      // Odd rounds change the local knote itself (same udata).
      struct kevent change = round % 2 == 0 ? Ev(sv[0], EVFILT_WRITE, EV_ADD)
                                            : Ev(p[0], EVFILT_READ, EV_ADD, 0, 0, this);
      std::vector<struct kevent> out(8);
      int n = kevent(kq, &change, 1, out.data(), out.size(), &kZero);
      ASSERT_EQ(n, 2) << (kq == local_ ? "local" : "ordinary") << " queue, round " << round;
      out.resize(n);
      std::sort(out.begin(), out.end(), Less);
      EXPECT_EQ(out[0].ident, static_cast<uintptr_t>(p[0]));
      EXPECT_EQ(out[0].filter, static_cast<uint32_t>(EVFILT_READ));
      EXPECT_EQ(out[0].data, 2);
      EXPECT_EQ(out[0].udata, static_cast<void*>(this));
      EXPECT_EQ(out[1].ident, static_cast<uintptr_t>(sv[0]));
      EXPECT_EQ(out[1].filter, static_cast<uint32_t>(EVFILT_WRITE));
    }
  }
}

TEST_F(LocalPath, AnotherProcesssKnoteOnTheSamePipeIsReportedBesideOurs) {
  // A child sharing the queue adds a knote of its own (fd knotes are per
  // process) on the same number, the same pipe: the daemon reports the
  // child's in the parent's call with changes, the parent collects its own;
  // both, as on the ordinary path, and neither twice.
  int p[2];
  Pipe(p);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  fds_.push_back(sv[0]);
  fds_.push_back(sv[1]);
  int ready[2], done[2];  // child to parent, parent to child
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(done), 0);
  for (int fd : {ready[0], ready[1], done[0], done[1]}) fds_.push_back(fd);
  ASSERT_EQ(write(p[1], "abc", 3), 3);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD, 0, 0, this), Ev(sv[0], EVFILT_WRITE, EV_ADD)}),
            0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    struct kevent change = Ev(p[0], EVFILT_READ, EV_ADD, 0, 0, p);
    char byte = kevent(local_, &change, 1, nullptr, 0, &kZero) == 0 ? 'y' : 'n';
    if (write(ready[1], &byte, 1) != 1) _exit(1);
    // Alive (its p[0] open) until the parent has called.
    if (read(done[0], &byte, 1) != 1) _exit(1);
    _exit(0);
  }
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  ASSERT_EQ(byte, 'y');
  struct kevent change = Ev(sv[0], EVFILT_WRITE, EV_ADD);
  std::vector<struct kevent> out(8);
  int n = kevent(local_, &change, 1, out.data(), out.size(), &kZero);
  const int saved = errno;
  ASSERT_EQ(write(done[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  ASSERT_EQ(n, 3) << strerror(saved);
  out.resize(n);
  std::sort(out.begin(), out.end(), Less);
  EXPECT_EQ(out[0].ident, static_cast<uintptr_t>(p[0]));
  EXPECT_EQ(out[1].ident, static_cast<uintptr_t>(p[0]));
  EXPECT_EQ(out[0].data, 3);
  EXPECT_EQ(out[1].data, 3);
  // One is ours, one the child's (by udata).
  EXPECT_NE(out[0].udata, out[1].udata);
  EXPECT_TRUE(out[0].udata == this || out[1].udata == this);
  EXPECT_TRUE(out[0].udata == p || out[1].udata == p);
  EXPECT_EQ(out[2].ident, static_cast<uintptr_t>(sv[0]));
}

TEST_F(LocalPath, ABlockingCallIsWokenByAWriteFromAnotherThread) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  const int before = g_kevent_ioctls.load();
  std::thread writer([&] {
    std::this_thread::sleep_for(milliseconds(100));
    ASSERT_EQ(write(p[1], "wake", 4), 4);
  });
  const int64_t start = NowMs();
  const struct timespec five = {5, 0};
  struct kevent ev;
  int n = kevent(local_, nullptr, 0, &ev, 1, &five);
  const int64_t took = NowMs() - start;
  writer.join();
  ASSERT_EQ(n, 1) << strerror(errno);
  EXPECT_EQ(ev.data, 4);
  EXPECT_GE(took, 50);
  EXPECT_LT(took, 3000);
  ExpectLocal(g_kevent_ioctls.load() - before);
  // A timeout with nothing: returns 0 after about that long.
  char buf[8];
  ASSERT_EQ(read(p[0], buf, sizeof buf), 4);
  const struct timespec short_wait = {0, 100 * 1000 * 1000};
  const int64_t t0 = NowMs();
  EXPECT_EQ(kevent(local_, nullptr, 0, &ev, 1, &short_wait), 0);
  EXPECT_GE(NowMs() - t0, 90);
}

// A program that keeps its queue in a poll() loop (as GLib, Qt or asyncio
// integrations do): poll the queue's descriptor, harvest, drain the pipe.
// With the fast path the harvest never tells the daemon, which holds the
// knote queued as it last saw it; the descriptor must still not stay
// readable after the drain, or the loop spins on empty harvests. (An
// ordinary queue may say readable once more: its knote is dropped by the
// next harvest, as in BSD.)
TEST_F(LocalPath, PollOnTheQueueAgreesWithTheHarvest) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  for (int kq : {local_, ioctl_}) {
    int empty_harvests = 0;
    for (int round = 0; round < 3; round++) {
      ASSERT_EQ(write(p[1], "x", 1), 1);
      struct pollfd pfd = {kq, POLLIN, 0};
      ASSERT_EQ(poll(&pfd, 1, 5000), 1) << "round " << round;
      ASSERT_EQ(Harvest(kq).size(), 1u) << "round " << round;
      char c;
      ASSERT_EQ(read(p[0], &c, 1), 1);
      while (poll(&pfd, 1, 0) == 1) {
        ASSERT_TRUE(Harvest(kq).empty());
        ASSERT_LE(++empty_harvests, 3) << "the queue stays readable with nothing to harvest";
      }
    }
    if (kq == local_ && fast_) EXPECT_EQ(empty_harvests, 0);
  }
}

TEST_F(LocalPath, AForkedChildSharingTheQueueGetsEvents) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(p[1], "abc", 3), 3);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child is not the local owner: its calls go to the daemon, which
    // sees every knote.
    const struct timespec two = {2, 0};
    struct kevent ev;
    int n = kevent(local_, nullptr, 0, &ev, 1, &two);
    _exit(n == 1 && ev.ident == static_cast<uintptr_t>(p[0]) && ev.data == 3 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  // The parent still collects it itself.
  int ioctls = -1;
  std::vector<struct kevent> got = Same(&ioctls);
  ASSERT_EQ(got.size(), 1u);
  ExpectLocal(ioctls);
}

TEST_F(LocalPath, AQueueReceivedOverScmRightsTakesTheOrdinaryPath) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(p[1], "x", 1), 1);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  char byte = 0;
  struct iovec iov = {&byte, 1};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &local_, sizeof(int));
  ASSERT_EQ(sendmsg(sv[0], &msg, 0), 1);
  msg.msg_controllen = sizeof control;
  ASSERT_EQ(recvmsg(sv[1], &msg, 0), 1);
  int received = -1;
  memcpy(&received, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
  close(sv[0]);
  close(sv[1]);
  ASSERT_GE(received, 0);
  const int before = g_kevent_ioctls.load();
  std::vector<struct kevent> got = Harvest(received);
  EXPECT_GT(g_kevent_ioctls.load(), before);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ident, static_cast<uintptr_t>(p[0]));
  close(received);
}

TEST_F(LocalPath, AClosedQueueIsEbadf) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  close(local_);
  struct kevent ev;
  EXPECT_EQ(kevent(local_, nullptr, 0, &ev, 1, &kZero), -1);
  EXPECT_EQ(errno, EBADF);
  local_ = -1;
}

// Issue 10: a zero-timeout harvest of one ready pipe is epoll_wait, the
// pipe's fstat (it still names the registered file) and FIONREAD — nothing
// about the queue's own descriptor.
TEST_F(LocalPath, AZeroTimeoutHarvestIsThreeSystemCalls) {
  if (!fast_) GTEST_SKIP() << "no fast path";
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(p[1], "abc", 3), 3);
  struct kevent ev;
  for (int round = 0; round < 3; round++) {
    const int ioctls = g_ioctls.load(), fstats = g_fstats.load(), waits = g_epoll_waits.load();
    ASSERT_EQ(kevent(local_, nullptr, 0, &ev, 1, &kZero), 1) << strerror(errno);
    EXPECT_EQ(g_epoll_waits.load() - waits, 1);
    EXPECT_EQ(g_fstats.load() - fstats, 1);
    EXPECT_EQ(g_ioctls.load() - ioctls, 1);  // FIONREAD
    EXPECT_EQ(ev.data, 3);
  }
}

// A close by another thread wakes a call parked in the library's epoll
// instance at once (the daemon raises its item at the FLUSH), with EBADF;
// until then the parked call sleeps in one epoll_wait (no polling).
TEST_F(LocalPath, ACloseFromAnotherThreadWakesAParkedLocalWait) {
  if (!fast_) GTEST_SKIP() << "no fast path";
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  for (int round = 0; round < 5; round++) {
    if (round > 0) {
      local_ = MakeQueue(true, &fast_);
      ASSERT_GE(local_, 0);
      ASSERT_TRUE(fast_);
      struct kevent add;
      EV_SET(&add, p[0], EVFILT_READ, EV_ADD, 0, 0, nullptr);
      ASSERT_EQ(kevent(local_, &add, 1, nullptr, 0, &kZero), 0);
    }
    const int kq = local_;
    const int waits = g_epoll_waits.load();
    const int kevents = g_kevent_ioctls.load();
    std::atomic<int> rc{0}, err{0};
    std::atomic<int64_t> woke{0};
    std::thread waiter([&] {
      struct kevent ev;
      rc = kevent(kq, nullptr, 0, &ev, 1, nullptr);
      err = errno;
      woke = NowMs();
    });
    std::this_thread::sleep_for(milliseconds(400));
    EXPECT_EQ(woke.load(), 0);
    EXPECT_EQ(g_epoll_waits.load() - waits, 1) << "the parked call woke up on its own";
    EXPECT_EQ(g_kevent_ioctls.load() - kevents, 0);
    const int64_t closed_at = NowMs();
    ASSERT_EQ(close(kq), 0);
    local_ = -1;
    waiter.join();
    EXPECT_EQ(rc.load(), -1);
    EXPECT_EQ(err.load(), EBADF) << strerror(err.load());
    EXPECT_LT(woke.load() - closed_at, 100) << "round " << round;
  }
}

// The number of a closed queue, taken by a pipe: EBADF (not a kqueue), and
// no event of the old queue's.
TEST_F(LocalPath, AClosedQueuesNumberReusedByAPipeIsEbadf) {
  int p[2];
  Pipe(p);
  ASSERT_EQ(Change({Ev(p[0], EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(p[1], "x", 1), 1);
  const int kq = local_;
  close(local_);
  local_ = -1;
  int q[2];
  ASSERT_EQ(pipe2(q, O_NONBLOCK), 0);
  const int reused = q[0] == kq ? q[0] : (q[1] == kq ? q[1] : -1);
  struct kevent ev;
  errno = 0;
  EXPECT_EQ(kevent(kq, nullptr, 0, &ev, 1, &kZero), -1);
  EXPECT_EQ(errno, EBADF) << strerror(errno) << (reused < 0 ? " (number not reused)" : "");
  close(q[0]);
  close(q[1]);
}

TEST_F(LocalPath, AFifoOpenedForBothWaysCollectsBoth) {
  char dir[] = "/tmp/kqlocalXXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/fifo";
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  int fd = open(path.c_str(), O_RDWR | O_NONBLOCK);
  ASSERT_GE(fd, 0);
  fds_.push_back(fd);
  ASSERT_EQ(Change({Ev(fd, EVFILT_READ, EV_ADD), Ev(fd, EVFILT_WRITE, EV_ADD)}), 0);
  int ioctls = -1;
  std::vector<struct kevent> got = Same(&ioctls);
  ExpectLocal(ioctls);
  ASSERT_EQ(got.size(), 1u);  // writable only
  ASSERT_EQ(write(fd, "abcd", 4), 4);
  got = Same(&ioctls);
  ExpectLocal(ioctls);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].data, 4);
  unlink(path.c_str());
  rmdir(dir);
}

TEST_F(LocalPath, AFifoReopenedAtItsNumberIsANewFile) {
  // Found by local_differential_test (seed 537602615): the FIFO opened
  // anew at the same number (same inode, another open file; the old one
  // gone, and with it the library's epoll item) is a new file to the
  // daemon; an EV_ADD of it must be collected.
  char dir[] = "/tmp/kqlocalXXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/fifo";
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  int fd = open(path.c_str(), O_RDWR | O_NONBLOCK);
  ASSERT_GE(fd, 0);
  fds_.push_back(fd);
  ASSERT_EQ(Change({Ev(fd, EVFILT_WRITE, EV_ADD, 0, 0, this)}), 0);
  EXPECT_EQ(Same().size(), 1u);
  int again = open(path.c_str(), O_RDWR | O_NONBLOCK);
  ASSERT_GE(again, 0);
  ASSERT_EQ(dup2(again, fd), fd);
  close(again);
  EXPECT_TRUE(Same().empty());  // the old knote went with its file
  ASSERT_EQ(Change({Ev(fd, EVFILT_WRITE, EV_ADD)}), 0);
  EXPECT_EQ(Same().size(), 1u);
  ASSERT_EQ(Change({Ev(fd, EVFILT_READ, EV_ADD)}), 0);
  ASSERT_EQ(write(fd, "ab", 2), 2);
  EXPECT_EQ(Same().size(), 2u);
  unlink(path.c_str());
  rmdir(dir);
}

TEST_F(LocalPath, AFifoReopenedWhileNoKnoteOfItIsLocalIsANewFileToo) {
  // Found by local_differential_test (seeds 244311352, 1330023663): the
  // knote of the old file was the daemon's (disabled), so the library had
  // no epoll item to tell the files apart by, and took the new knote's
  // flags for the old one's.
  char dir[] = "/tmp/kqlocalXXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/fifo";
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  int fd = open(path.c_str(), O_RDWR | O_NONBLOCK);
  ASSERT_GE(fd, 0);
  fds_.push_back(fd);
  ASSERT_EQ(Change({Ev(fd, EVFILT_READ, EV_ADD | EV_DISABLE, 0, 0, this)}), 0);
  int again = open(path.c_str(), O_RDWR | O_NONBLOCK);
  ASSERT_GE(again, 0);
  ASSERT_EQ(dup2(again, fd), fd);
  close(again);
  ASSERT_EQ(Change({Ev(fd, EVFILT_READ, EV_ADD | EV_ENABLE, 0, 0, this)}), 0);
  ASSERT_EQ(write(fd, "ab", 2), 2);
  std::vector<struct kevent> got = Same();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].flags, static_cast<uint32_t>(EV_ADD | EV_ENABLE));
  unlink(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace client_test
}  // namespace kqd
