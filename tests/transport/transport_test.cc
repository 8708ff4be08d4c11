// End-to-end tests of the transports: a fake DeviceHandler served over a
// FUSE-mounted temporary file (and over CUSE where /dev/cuse exists, e.g. in
// the test VM; skipped otherwise), driven with real open/ioctl/poll/close
// from this process and from forked children.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/transport/caller_memory.h"
#include "daemon/transport/cuse_transport.h"
#include "daemon/transport/device_handler.h"
#include "daemon/transport/fuse_transport.h"
#include "daemon/transport/transport.h"
#include "gtest/gtest.h"

namespace kqd {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// ---- The test device's ioctls ('t' is unused by the VFS) -----------------

struct EchoArgs {
  uint64_t a;
  uint64_t b;
};
struct MemArgs {
  uint64_t src;  // read len bytes here in the caller
  uint64_t dst;  // write them back, each byte inverted, here
  uint64_t len;
};
struct StrArgs {
  uint64_t addr;
  uint64_t max_len;
};

// in {a, b} → out {b, a + 1}, returns a + b (small values).
constexpr unsigned long kEcho = _IOWR('t', 1, EchoArgs);
// Same as kEcho, answered 50 ms later from another thread.
constexpr unsigned long kDeferredEcho = _IOWR('t', 2, EchoArgs);
// Parked until interrupted (then EINTR) or stopped.
constexpr unsigned long kPark = _IO('t', 3);
// Parked; OnInterrupt is set only 300 ms later, from another thread.
constexpr unsigned long kParkLateInterrupt = _IO('t', 4);
// Returns the handle in the argument.
constexpr unsigned long kHandle = _IOR('t', 5, uint64_t);
// The reply is destroyed unanswered.
constexpr unsigned long kDrop = _IO('t', 6);
// Copies through caller_memory; returns len or fails with its errno.
constexpr unsigned long kMemCopy = _IOW('t', 7, MemArgs);
// ReadCallerString; returns the length or fails with its errno.
constexpr unsigned long kString = _IOW('t', 8, StrArgs);
// Replies more bytes than the command allows (a handler bug).
constexpr unsigned long kOversize = _IOR('t', 9, uint32_t);
// Anything else: ENOTTY from the handler.
constexpr unsigned long kUnknown = _IOWR('t', 99, EchoArgs);

// Runs tasks after a delay on one thread that blocks all signals, so that
// SIGALRM always reaches the test's own thread.
class DelayedRunner {
 public:
  DelayedRunner() {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    thread_ = std::thread([this] { Run(); });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  ~DelayedRunner() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void After(milliseconds delay, std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.emplace(Clock::now() + delay, std::move(fn));
    }
    cv_.notify_all();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (tasks_.empty()) {
        if (done_) return;
        cv_.wait(lock);
        continue;
      }
      auto first = tasks_.begin();
      if (Clock::now() < first->first) {
        cv_.wait_until(lock, first->first);
        continue;
      }
      std::function<void()> fn = std::move(first->second);
      tasks_.erase(first);
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<Clock::time_point, std::function<void()>> tasks_;
  bool done_ = false;
  std::thread thread_;
};

class FakeHandler : public DeviceHandler {
 public:
  int Open(const Caller& caller, uint64_t* handle) override {
    std::lock_guard<std::mutex> lock(mu_);
    *handle = next_handle_++;
    opens_.push_back({*handle, caller});
    return 0;
  }

  void Release(uint64_t handle) override {
    std::lock_guard<std::mutex> lock(mu_);
    released_.push_back(handle);
    cv_.notify_all();
  }

  void Ioctl(uint64_t handle, const Caller& caller, uint32_t cmd,
             uint64_t arg, const void* in, size_t in_size,
             std::unique_ptr<IoctlReply> reply) override {
    ioctl_calls_++;
    switch (cmd) {
      case static_cast<uint32_t>(kEcho): {
        EchoArgs a;
        if (in_size != sizeof(a)) return reply->ReplyError(EINVAL);
        memcpy(&a, in, sizeof(a));
        EchoArgs out = {a.b, a.a + 1};
        return reply->ReplyOk(static_cast<int>(a.a + a.b), &out, sizeof(out));
      }
      case static_cast<uint32_t>(kDeferredEcho): {
        EchoArgs a;
        if (in_size != sizeof(a)) return reply->ReplyError(EINVAL);
        memcpy(&a, in, sizeof(a));  // `in` is valid during this call only
        std::shared_ptr<IoctlReply> shared(std::move(reply));
        runner_.After(milliseconds(50), [a, shared] {
          EchoArgs out = {a.b, a.a + 1};
          shared->ReplyOk(static_cast<int>(a.a + a.b), &out, sizeof(out));
        });
        return;
      }
      case static_cast<uint32_t>(kPark):
      case static_cast<uint32_t>(kParkLateInterrupt): {
        uint64_t id;
        IoctlReply* raw = reply.get();
        {
          std::lock_guard<std::mutex> lock(mu_);
          id = next_parked_++;
          parked_[id] = std::move(reply);
        }
        auto on_interrupt = [this, id] {
          std::unique_ptr<IoctlReply> r = TakeParked(id);
          interrupts_++;
          if (r) r->ReplyError(EINTR);
        };
        if (cmd == static_cast<uint32_t>(kPark)) {
          raw->OnInterrupt(on_interrupt);
        } else {
          runner_.After(milliseconds(300), [this, id, on_interrupt] {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = parked_.find(id);
            if (it != parked_.end()) it->second->OnInterrupt(on_interrupt);
          });
        }
        return;
      }
      case static_cast<uint32_t>(kHandle):
        return reply->ReplyOk(0, &handle, sizeof(handle));
      case static_cast<uint32_t>(kDrop):
        return;  // `reply` dies here unanswered
      case static_cast<uint32_t>(kMemCopy): {
        MemArgs m;
        if (in_size != sizeof(m)) return reply->ReplyError(EINVAL);
        memcpy(&m, in, sizeof(m));
        std::vector<unsigned char> buf(m.len);
        int err = ReadCallerMemory(caller.tid, m.src, buf.data(), buf.size());
        if (err != 0) return reply->ReplyError(err);
        for (auto& c : buf) c = static_cast<unsigned char>(~c);
        err = WriteCallerMemory(caller.tid, m.dst, buf.data(), buf.size());
        if (err != 0) return reply->ReplyError(err);
        return reply->ReplyOk(static_cast<int>(m.len), nullptr, 0);
      }
      case static_cast<uint32_t>(kString): {
        StrArgs s;
        if (in_size != sizeof(s)) return reply->ReplyError(EINVAL);
        memcpy(&s, in, sizeof(s));
        std::string text;
        int err = ReadCallerString(caller.tid, s.addr, s.max_len, &text);
        if (err != 0) return reply->ReplyError(err);
        return reply->ReplyOk(static_cast<int>(text.size()), nullptr, 0);
      }
      case static_cast<uint32_t>(kOversize): {
        char big[64] = {};
        return reply->ReplyOk(0, big, sizeof(big));
      }
      default:
        return reply->ReplyError(ENOTTY);
    }
  }

  uint32_t Poll(uint64_t handle,
                std::unique_ptr<PollNotifier> notifier) override {
    std::lock_guard<std::mutex> lock(mu_);
    polls_++;
    if (notifier) notifier_ = std::move(notifier);
    return ready_ ? POLLIN : 0;
  }

  // Readiness changes: wake whoever polls, as a real handler would.
  void SetReady() {
    std::unique_ptr<PollNotifier> notifier;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_ = true;
      notifier = std::move(notifier_);
    }
    if (notifier) notifier->Notify();
  }

  bool WaitReleased(uint64_t handle, milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return CountReleased(handle); });
  }

  int ReleaseCount(uint64_t handle) {
    std::lock_guard<std::mutex> lock(mu_);
    return CountReleased(handle);
  }

  std::vector<std::pair<uint64_t, Caller>> opens() {
    std::lock_guard<std::mutex> lock(mu_);
    return opens_;
  }

  size_t parked_count() {
    std::lock_guard<std::mutex> lock(mu_);
    return parked_.size();
  }

  // Answers every parked ioctl (they must not outlive the test's fds).
  void AnswerAllParked(int error) {
    std::map<uint64_t, std::unique_ptr<IoctlReply>> parked;
    {
      std::lock_guard<std::mutex> lock(mu_);
      parked.swap(parked_);
    }
    for (auto& entry : parked) entry.second->ReplyError(error);
  }

  std::atomic<int> ioctl_calls_{0};
  std::atomic<int> interrupts_{0};
  std::atomic<int> polls_{0};

 private:
  int CountReleased(uint64_t handle) {
    int n = 0;
    for (uint64_t h : released_) n += h == handle;
    return n;
  }

  std::unique_ptr<IoctlReply> TakeParked(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = parked_.find(id);
    if (it == parked_.end()) return nullptr;
    std::unique_ptr<IoctlReply> r = std::move(it->second);
    parked_.erase(it);
    return r;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_handle_ = 1000;
  uint64_t next_parked_ = 1;
  std::vector<std::pair<uint64_t, Caller>> opens_;
  std::vector<uint64_t> released_;
  std::map<uint64_t, std::unique_ptr<IoctlReply>> parked_;
  std::unique_ptr<PollNotifier> notifier_;
  bool ready_ = false;
  DelayedRunner runner_;  // last: joined first, while the rest still exists
};

// ---- Helpers ---------------------------------------------------------------

std::string TempPath(const std::string& name) {
  const char* dir = getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name + "-" +
         std::to_string(getpid());
}

// Independent of the code under test: any mountinfo line whose mount point
// field is exactly `path` (test paths contain no characters mountinfo
// escapes).
bool MountedAt(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    size_t pos = 0;
    for (int field = 0; field < 4 && pos != std::string::npos; ++field) {
      pos = line.find(' ', pos);
      if (pos != std::string::npos) ++pos;
    }
    if (pos == std::string::npos) continue;
    size_t end = line.find(' ', pos);
    if (line.substr(pos, end - pos) == path) return true;
  }
  return false;
}

void NoOpHandler(int) {}

// Installs a no-op SIGALRM handler and arms a one-shot timer; restores both.
class AlarmAfter {
 public:
  AlarmAfter(milliseconds delay, bool restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = NoOpHandler;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, &old_);
    struct itimerval timer;
    memset(&timer, 0, sizeof(timer));
    timer.it_value.tv_sec = delay.count() / 1000;
    timer.it_value.tv_usec = (delay.count() % 1000) * 1000;
    setitimer(ITIMER_REAL, &timer, nullptr);
  }
  ~AlarmAfter() {
    struct itimerval off;
    memset(&off, 0, sizeof(off));
    setitimer(ITIMER_REAL, &off, nullptr);
    sigaction(SIGALRM, &old_, nullptr);
  }

 private:
  struct sigaction old_;
};

uint64_t Addr(const void* p) {
  return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
}

// ---- Tests that run on every available transport ------------------------

class TransportTest : public ::testing::TestWithParam<TransportKind> {
 protected:
  void SetUp() override {
    if (GetParam() == TransportKind::kCuse) {
      if (access(CuseTransport::kControlDevice, F_OK) != 0) {
        GTEST_SKIP() << "no /dev/cuse on this kernel";
      }
      path_ = "/dev/kqtest-" + std::to_string(getpid());
    } else {
      path_ = TempPath("kqueue");
    }
    std::string error;
    transport_ = StartTransport(GetParam(), path_, &handler_, &error);
    ASSERT_TRUE(transport_) << error;
    path_ = transport_->device_path();
  }

  void TearDown() override {
    if (transport_) transport_->Stop();
    transport_.reset();
    if (GetParam() == TransportKind::kFuse) {
      EXPECT_FALSE(MountedAt(path_));
      unlink(path_.c_str());
    }
  }

  int OpenDevice() {
    int fd = open(path_.c_str(), O_RDWR | O_CLOEXEC);
    EXPECT_GE(fd, 0) << path_ << ": " << strerror(errno);
    return fd;
  }

  uint64_t HandleOf(int fd) {
    uint64_t h = 0;
    EXPECT_EQ(ioctl(fd, kHandle, &h), 0) << strerror(errno);
    return h;
  }

  FakeHandler handler_;
  std::string path_;
  std::unique_ptr<Transport> transport_;
};

TEST_P(TransportTest, EachOpenIsANewHandleReleasedOnClose) {
  int fd1 = OpenDevice();
  int fd2 = OpenDevice();
  uint64_t h1 = HandleOf(fd1);
  uint64_t h2 = HandleOf(fd2);
  EXPECT_NE(h1, h2);
  auto opens = handler_.opens();
  ASSERT_EQ(opens.size(), 2u);
  EXPECT_EQ(opens[0].second.tid, gettid());
  EXPECT_EQ(opens[0].second.uid, 0u);

  // dup() shares the open file: one release, at the last close.
  int dup1 = dup(fd1);
  close(fd1);
  EXPECT_FALSE(handler_.WaitReleased(h1, milliseconds(100)));
  EXPECT_EQ(HandleOf(dup1), h1);
  close(dup1);
  EXPECT_TRUE(handler_.WaitReleased(h1, milliseconds(2000)));
  EXPECT_EQ(handler_.ReleaseCount(h2), 0);
  close(fd2);
  EXPECT_TRUE(handler_.WaitReleased(h2, milliseconds(2000)));
  EXPECT_EQ(handler_.ReleaseCount(h1), 1);
}

TEST_P(TransportTest, ForkedChildSharesTheHandle) {
  int fd = OpenDevice();
  uint64_t h = HandleOf(fd);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only async-signal-safe-ish calls here: no gtest in the child.
    uint64_t seen = 0;
    if (ioctl(fd, kHandle, &seen) != 0 || seen != h) _exit(1);
    EchoArgs e = {3, 4};
    if (ioctl(fd, kEcho, &e) != 7 || e.a != 4 || e.b != 4) _exit(2);
    int own = open(path_.c_str(), O_RDWR);
    uint64_t own_handle = 0;
    if (own < 0 || ioctl(own, kHandle, &own_handle) != 0) _exit(3);
    if (own_handle == h) _exit(4);
    char src[32] = "child memory";
    char dst[32] = {};
    MemArgs m = {Addr(src), Addr(dst), sizeof(src)};
    if (ioctl(own, kMemCopy, &m) != static_cast<int>(sizeof(src))) _exit(5);
    for (size_t i = 0; i < sizeof(src); ++i) {
      if (dst[i] != static_cast<char>(~src[i])) _exit(6);
    }
    close(own);
    close(fd);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);

  // The child's own open came from the child's thread, and was released.
  auto opens = handler_.opens();
  ASSERT_EQ(opens.size(), 2u);
  EXPECT_EQ(opens[1].second.tid, child);
  EXPECT_TRUE(handler_.WaitReleased(opens[1].first, milliseconds(2000)));
  // The shared one is still open here.
  EXPECT_FALSE(handler_.WaitReleased(h, milliseconds(100)));
  EXPECT_EQ(HandleOf(fd), h);
  close(fd);
  EXPECT_TRUE(handler_.WaitReleased(h, milliseconds(2000)));
}

TEST_P(TransportTest, IoctlRoundTripsBytesAndResult) {
  int fd = OpenDevice();
  EchoArgs e = {40, 2};
  EXPECT_EQ(ioctl(fd, kEcho, &e), 42);
  EXPECT_EQ(e.a, 2u);
  EXPECT_EQ(e.b, 41u);
  close(fd);
}

TEST_P(TransportTest, ReplyFromAnotherThreadLater) {
  int fd = OpenDevice();
  EchoArgs e = {5, 6};
  auto start = Clock::now();
  EXPECT_EQ(ioctl(fd, kDeferredEcho, &e), 11);
  EXPECT_GE(Clock::now() - start, milliseconds(40));
  EXPECT_EQ(e.a, 6u);
  EXPECT_EQ(e.b, 6u);
  close(fd);
}

TEST_P(TransportTest, ManyThreadsWithDeferredReplies) {
  int fd = OpenDevice();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < 25; ++i) {
        EchoArgs e = {static_cast<uint64_t>(t), i};
        unsigned long cmd = (i % 2) ? kDeferredEcho : kEcho;
        int r = ioctl(fd, cmd, &e);
        if (r != static_cast<int>(t + i) || e.a != i ||
            e.b != static_cast<uint64_t>(t) + 1) {
          failures++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  close(fd);
}

TEST_P(TransportTest, SignalInterruptsParkedIoctl) {
  int fd = OpenDevice();
  for (bool restart : {false, true}) {
    auto start = Clock::now();
    int r;
    {
      AlarmAfter alarm(milliseconds(100), restart);
      r = ioctl(fd, kPark);
    }
    int err = errno;
    auto elapsed = Clock::now() - start;
    EXPECT_EQ(r, -1);
    EXPECT_EQ(err, EINTR) << strerror(err);
    EXPECT_LT(elapsed, milliseconds(500));
  }
  EXPECT_EQ(handler_.interrupts_.load(), 2);
  EXPECT_EQ(handler_.parked_count(), 0u);
  close(fd);
}

TEST_P(TransportTest, InterruptBeforeCallbackIsSetStillDelivered) {
  int fd = OpenDevice();
  auto start = Clock::now();
  int r;
  {
    AlarmAfter alarm(milliseconds(100), false);
    r = ioctl(fd, kParkLateInterrupt);
  }
  int err = errno;
  auto elapsed = Clock::now() - start;
  EXPECT_EQ(r, -1);
  EXPECT_EQ(err, EINTR);
  // The signal came at 100 ms; the callback only exists from 300 ms on.
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(1000));
  EXPECT_EQ(handler_.interrupts_.load(), 1);
  close(fd);
}

TEST_P(TransportTest, UnansweredReplyIsEio) {
  int fd = OpenDevice();
  EXPECT_EQ(ioctl(fd, kDrop), -1);
  EXPECT_EQ(errno, EIO);
  close(fd);
}

TEST_P(TransportTest, OversizedReplyIsEio) {
  int fd = OpenDevice();
  uint32_t out = 0;
  EXPECT_EQ(ioctl(fd, kOversize, &out), -1);
  EXPECT_EQ(errno, EIO);
  close(fd);
}

TEST_P(TransportTest, HandlerErrnoReachesCaller) {
  int fd = OpenDevice();
  int before = handler_.ioctl_calls_.load();
  EchoArgs e = {1, 2};
  EXPECT_EQ(ioctl(fd, kUnknown, &e), -1);
  EXPECT_EQ(errno, ENOTTY);
  EXPECT_EQ(handler_.ioctl_calls_.load(), before + 1);  // it was the handler
  close(fd);
}

TEST_P(TransportTest, PollReportsReadinessAfterNotify) {
  int fd = OpenDevice();
  struct pollfd p = {fd, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  DelayedRunner runner;
  runner.After(milliseconds(100), [this] { handler_.SetReady(); });
  auto start = Clock::now();
  p.revents = 0;
  EXPECT_EQ(poll(&p, 1, 5000), 1);
  EXPECT_TRUE(p.revents & POLLIN);
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
  // Level-triggered: still ready.
  EXPECT_EQ(poll(&p, 1, 0), 1);
  close(fd);
}

TEST_P(TransportTest, EpollWakesAfterNotify) {
  int fd = OpenDevice();
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = EPOLLIN;
  ev.data.u64 = 77;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
  struct epoll_event got;
  EXPECT_EQ(epoll_wait(ep, &got, 1, 0), 0);
  DelayedRunner runner;
  runner.After(milliseconds(100), [this] { handler_.SetReady(); });
  ASSERT_EQ(epoll_wait(ep, &got, 1, 5000), 1);
  EXPECT_TRUE(got.events & EPOLLIN);
  EXPECT_EQ(got.data.u64, 77u);
  close(ep);
  close(fd);
}

TEST_P(TransportTest, HandlerUsesCallerMemory) {
  int fd = OpenDevice();
  std::vector<unsigned char> src(64 * 1024);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i);
  std::vector<unsigned char> dst(src.size(), 0);
  MemArgs m = {Addr(src.data()), Addr(dst.data()), src.size()};
  EXPECT_EQ(ioctl(fd, kMemCopy, &m), static_cast<int>(src.size()));
  for (size_t i = 0; i < src.size(); ++i) {
    ASSERT_EQ(dst[i], static_cast<unsigned char>(~src[i])) << i;
  }
  // Bad source and destination pointers.
  m = {1, Addr(dst.data()), 16};
  EXPECT_EQ(ioctl(fd, kMemCopy, &m), -1);
  EXPECT_EQ(errno, EFAULT);
  m = {Addr(src.data()), 8, 16};
  EXPECT_EQ(ioctl(fd, kMemCopy, &m), -1);
  EXPECT_EQ(errno, EFAULT);
  close(fd);
}

TEST_P(TransportTest, HandlerReadsStringBeforeGuardPage) {
  int fd = OpenDevice();
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  char* base = static_cast<char*>(mem);
  ASSERT_EQ(mprotect(base + page, page, PROT_NONE), 0);
  const char name[] = "EVFILT_TIMER";
  char* at = base + page - sizeof(name);  // NUL in the page's last byte
  memcpy(at, name, sizeof(name));
  StrArgs s = {Addr(at), 256};
  EXPECT_EQ(ioctl(fd, kString, &s), static_cast<int>(strlen(name)));
  s = {Addr(at), 5};
  EXPECT_EQ(ioctl(fd, kString, &s), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  s = {0, 256};
  EXPECT_EQ(ioctl(fd, kString, &s), -1);
  EXPECT_EQ(errno, EFAULT);
  munmap(mem, 2 * page);
  close(fd);
}

TEST_P(TransportTest, OtherUsersCanOpen) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0) {
      _exit(77);  // cannot drop privileges here (user namespace?)
    }
    int fd = open(path_.c_str(), O_RDWR);
    if (fd < 0) _exit(1);
    EchoArgs e = {1, 1};
    if (ioctl(fd, kEcho, &e) != 2) _exit(2);
    close(fd);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "cannot setuid here";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto opens = handler_.opens();
  ASSERT_EQ(opens.size(), 1u);
  EXPECT_EQ(opens[0].second.uid, 65534u);
}

TEST_P(TransportTest, StopAnswersParkedIoctlsAndReleasesHandles) {
  int fd = OpenDevice();
  uint64_t h = HandleOf(fd);
  std::atomic<int> result{0};
  std::atomic<int> error{0};
  std::thread caller([&] {
    result = ioctl(fd, kPark);
    error = errno;
  });
  auto deadline = Clock::now() + milliseconds(2000);
  while (handler_.parked_count() == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_EQ(handler_.parked_count(), 1u);
  EXPECT_TRUE(transport_->running());
  transport_->Stop();
  caller.join();
  EXPECT_EQ(result.load(), -1);
  // The errno the kernel gives parked calls when a daemon is killed.
  EXPECT_EQ(error.load(), ECONNABORTED);
  EXPECT_FALSE(transport_->running());
  // The kernel will never send RELEASE now; the transport did.
  EXPECT_EQ(handler_.ReleaseCount(h), 1);
  // Late answers from the handler are ignored.
  handler_.AnswerAllParked(EINTR);
  // The old fd is dead, not hanging.
  uint64_t out;
  EXPECT_EQ(ioctl(fd, kHandle, &out), -1);
  close(fd);
  transport_->Stop();  // idempotent
  EXPECT_EQ(handler_.ReleaseCount(h), 1);
}

INSTANTIATE_TEST_SUITE_P(Kinds, TransportTest,
                         ::testing::Values(TransportKind::kFuse,
                                           TransportKind::kCuse),
                         [](const ::testing::TestParamInfo<TransportKind>& i) {
                           return std::string(TransportKindName(i.param));
                         });

// ---- FUSE-specific: the mount point ---------------------------------------

TEST(FuseTransport, FileLooksLikeADeviceFileWhileMounted) {
  FakeHandler handler;
  std::string path = TempPath("kqueue-stat");
  std::string error;
  auto transport = FuseTransport::Start(path, &handler, &error);
  ASSERT_TRUE(transport) << error;
  EXPECT_TRUE(MountedAt(path));
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  EXPECT_EQ(chmod(path.c_str(), 0600), -1);
  transport->Stop();
  EXPECT_FALSE(MountedAt(path));
  // The placeholder was created by the transport: the device goes with it.
  EXPECT_EQ(stat(path.c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST(FuseTransport, ExistingFileIsUsedAndKept) {
  std::string path = TempPath("kqueue-existing");
  {
    std::ofstream f(path);
    f << "placeholder";
  }
  FakeHandler handler;
  std::string error;
  auto transport = FuseTransport::Start(path, &handler, &error);
  ASSERT_TRUE(transport) << error;
  transport.reset();  // the destructor stops
  EXPECT_FALSE(MountedAt(path));
  std::ifstream f(path);
  std::string content;
  f >> content;
  EXPECT_EQ(content, "placeholder");
  unlink(path.c_str());
}

TEST(FuseTransport, SecondTransportOnSamePathIsRefused) {
  FakeHandler handler;
  std::string path = TempPath("kqueue-twice");
  std::string error;
  auto first = FuseTransport::Start(path, &handler, &error);
  ASSERT_TRUE(first) << error;
  FakeHandler other;
  auto second = FuseTransport::Start(path, &other, &error);
  EXPECT_FALSE(second);
  EXPECT_NE(error.find("already mounted"), std::string::npos) << error;
  EXPECT_TRUE(other.opens().empty());
  // The first one still works.
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  EchoArgs e = {1, 2};
  EXPECT_EQ(ioctl(fd, kEcho, &e), 3);
  close(fd);
  first->Stop();
  EXPECT_FALSE(MountedAt(path));
  unlink(path.c_str());
}

TEST(FuseTransport, RefusesNonRegularFiles) {
  FakeHandler handler;
  std::string error;
  std::string dir = TempPath("kqueue-dir");
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0);
  EXPECT_FALSE(FuseTransport::Start(dir, &handler, &error));
  EXPECT_NE(error.find("directory"), std::string::npos) << error;
  rmdir(dir.c_str());

  std::string link = TempPath("kqueue-link");
  ASSERT_EQ(symlink("/dev/null", link.c_str()), 0);
  EXPECT_FALSE(FuseTransport::Start(link, &handler, &error));
  EXPECT_NE(error.find("symbolic link"), std::string::npos) << error;
  unlink(link.c_str());

  EXPECT_FALSE(FuseTransport::Start(TempPath("no-such-dir") + "/kqueue",
                                    &handler, &error));
  EXPECT_FALSE(error.empty());
}

// A daemon that mounts `path` in a child process and then waits, to be
// killed without cleaning up. Its pid once the mount is served, or -1.
pid_t MountInAChild(const std::string& path) {
  int ready[2];
  if (pipe(ready) != 0) return -1;
  pid_t child = fork();
  if (child < 0) return -1;
  if (child == 0) {
    close(ready[0]);
    FakeHandler handler;
    std::string error;
    auto transport = FuseTransport::Start(path, &handler, &error);
    char ok = transport ? 'y' : 'n';
    if (write(ready[1], &ok, 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(ready[1]);
  char ok = 0;
  const bool served = read(ready[0], &ok, 1) == 1 && ok == 'y';
  close(ready[0]);
  if (!served) {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    return -1;
  }
  return child;
}

TEST(FuseTransport, DeadMountOfCrashedDaemonIsReplaced) {
  std::string path = TempPath("kqueue-stale");
  const pid_t child = MountInAChild(path);
  ASSERT_GT(child, 0);
  kill(child, SIGKILL);
  int status;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), -1);
  EXPECT_EQ(errno, ENOTCONN);
  ASSERT_TRUE(MountedAt(path));

  FakeHandler handler;
  std::string error;
  auto transport = FuseTransport::Start(path, &handler, &error);
  ASSERT_TRUE(transport) << error;
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  EchoArgs e = {2, 2};
  EXPECT_EQ(ioctl(fd, kEcho, &e), 4);
  close(fd);
  transport->Stop();
  EXPECT_FALSE(MountedAt(path));
  unlink(path.c_str());
}

// issue 12 item 11: once anyone has looked at the device, the kernel caches
// its attributes for an hour, and stat/lstat keep answering from that cache
// after the daemon is gone. The restart must still see the mount is dead.
TEST(FuseTransport, DeadMountIsReplacedEvenWhileItsAttributesAreCached) {
  std::string path = TempPath("kqueue-stale-cached");
  const pid_t child = MountInAChild(path);
  ASSERT_GT(child, 0);
  // Fill the attribute cache while the daemon lives.
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  int old_fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(old_fd, 0);
  kill(child, SIGKILL);
  int status;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  // The cache still answers: this is what fooled the old check.
  EXPECT_EQ(lstat(path.c_str(), &st), 0);
  ASSERT_TRUE(MountedAt(path));

  FakeHandler handler;
  std::string error;
  auto transport = FuseTransport::Start(path, &handler, &error);
  ASSERT_TRUE(transport) << error;
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  EchoArgs e = {2, 3};
  EXPECT_EQ(ioctl(fd, kEcho, &e), 5);
  close(fd);
  // The descriptor opened on the dead mount stays dead.
  EXPECT_EQ(ioctl(old_fd, kEcho, &e), -1);
  EXPECT_EQ(errno, ENOTCONN);
  close(old_fd);
  transport->Stop();
  EXPECT_FALSE(MountedAt(path));
  unlink(path.c_str());
}

TEST(Transport, ParseKind) {
  TransportKind kind;
  ASSERT_TRUE(ParseTransportKind("fuse", &kind));
  EXPECT_EQ(kind, TransportKind::kFuse);
  ASSERT_TRUE(ParseTransportKind("cuse", &kind));
  EXPECT_EQ(kind, TransportKind::kCuse);
  ASSERT_TRUE(ParseTransportKind("auto", &kind));
  EXPECT_EQ(kind, TransportKind::kAuto);
  EXPECT_FALSE(ParseTransportKind("FUSE", &kind));
}

TEST(Transport, AutoOutsideDevIsFuse) {
  FakeHandler handler;
  std::string error;
  std::string path = TempPath("kqueue-auto");
  auto transport = StartTransport(TransportKind::kAuto, path, &handler, &error);
  ASSERT_TRUE(transport) << error;
  EXPECT_EQ(transport->kind(), TransportKind::kFuse);
  transport->Stop();
  unlink(path.c_str());
}

TEST(Transport, CuseNeedsADevPath) {
  FakeHandler handler;
  std::string error;
  EXPECT_FALSE(
      StartTransport(TransportKind::kCuse, "/tmp/kqueue", &handler, &error));
  EXPECT_NE(error.find("/dev/"), std::string::npos) << error;
}

}  // namespace
}  // namespace kqd
