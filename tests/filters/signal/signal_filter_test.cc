// EVFILT_SIGNAL through the core, the test process being the registering
// process: counting without stealing (ignored, caught, blocked signals all
// count and keep their normal fate), threads, isolation from other
// processes, and the trace record parser.
//
// Needs root and tracefs: run unsandboxed (tags "local").
// Signals reach the daemon through ring buffers read by the reactor thread,
// so counts are awaited with generous timeouts; asserting "nothing more"
// waits a fixed settle time.
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/filters/signal/signal_filter.h"
#include "daemon/filters/signal/signal_trace.h"
#include "daemon/util/scoped_fd.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"

namespace {

using kqd::testing::Ev;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;
using SteadyClock = std::chrono::steady_clock;

constexpr long kSettleMs = 150;  // time for in-flight samples to be counted

pid_t Gettid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

int Tgkill(pid_t tgid, pid_t tid, int sig) {
  return static_cast<int>(syscall(SYS_tgkill, tgid, tid, sig));
}

void SleepMs(long ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

kq_kevent Sig(int sig, uint32_t flags = EV_ADD, uint64_t udata = 0) {
  return Ev(static_cast<uint64_t>(sig), EVFILT_SIGNAL, flags, 0, 0, udata);
}

// Sets a disposition for the test's duration and restores the old one.
class ScopedDisposition {
 public:
  ScopedDisposition(int sig, void (*handler)(int)) : sig_(sig) {
    struct sigaction sa {};
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(sig_, &sa, &old_);
  }
  ~ScopedDisposition() { sigaction(sig_, &old_, nullptr); }

 private:
  int sig_;
  struct sigaction old_ {};
};

// Blocks a signal in this thread (and the threads it creates from now on).
class ScopedBlock {
 public:
  explicit ScopedBlock(int sig) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~ScopedBlock() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

 private:
  sigset_t old_;
};

std::atomic<int> g_handled{0};
std::atomic<pid_t> g_handled_tid{0};
void CountingHandler(int) {
  g_handled++;
  g_handled_tid = Gettid();
}

// Threads that start, note their thread id and wait until destruction,
// which releases and joins them (also when an assertion returns early).
class ParkedThreads {
 public:
  explicit ParkedThreads(int n) : tids_(static_cast<size_t>(n), 0) {
    for (int i = 0; i < n; i++) {
      threads_.emplace_back([this, i] {
        std::unique_lock<std::mutex> l(mu_);
        tids_[static_cast<size_t>(i)] = Gettid();
        started_++;
        cv_.notify_all();
        cv_.wait(l, [this] { return release_; });
      });
    }
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [this, n] { return started_ == n; });
  }
  ~ParkedThreads() {
    {
      std::lock_guard<std::mutex> l(mu_);
      release_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  pid_t tid(int i) const { return tids_[static_cast<size_t>(i)]; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<pid_t> tids_;  // guarded by mu_ until the constructor returns
  int started_ = 0;
  bool release_ = false;
  std::vector<std::thread> threads_;
};

// A child process that waits until destruction, which lets it exit and
// reaps it.
class WaitingChild {
 public:
  WaitingChild() {
    int go[2];
    if (pipe(go) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      char c;
      close(go[1]);
      while (read(go[0], &c, 1) < 0 && errno == EINTR) {
      }
      _exit(0);
    }
    close(go[0]);
    release_.reset(go[1]);
  }
  ~WaitingChild() {
    release_.reset();
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  kqd::ScopedFd release_;  // its EOF tells the child to exit
};

// Collects until the signal's counts add up to `expected` or `timeout_ms`
// passes; returns the total (then waits kSettleMs for anything extra).
int64_t CollectTotal(TestQueue& q, int sig, int64_t expected, long timeout_ms = 5000) {
  int64_t total = 0;
  const auto start = SteadyClock::now();
  auto elapsed = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start)
        .count();
  };
  while (total < expected && elapsed() < timeout_ms) {
    for (const kq_kevent& ev : q.Collect(8, 100)) {
      if (ev.ident == static_cast<uint64_t>(sig) && ev.filter == EVFILT_SIGNAL) total += ev.data;
    }
  }
  for (const kq_kevent& ev : q.Collect(8, kSettleMs)) {
    if (ev.ident == static_cast<uint64_t>(sig) && ev.filter == EVFILT_SIGNAL) total += ev.data;
  }
  return total;
}

// Waits until the kqueue has something queued (the first sample counted),
// then lets the rest arrive.
void WaitPendingThenSettle(TestQueue& q) {
  const auto start = SteadyClock::now();
  while (q.kq().Pending() == 0 && SteadyClock::now() - start < std::chrono::seconds(5)) {
    SleepMs(5);
  }
  SleepMs(kSettleMs);
}

class SignalFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "EVFILT_SIGNAL needs root (tracefs)";
  }

  // Registers; used with ASSERT_TRUE, so unavailable tracing fails the
  // test at once (as root it must work) instead of skipping it.
  static ::testing::AssertionResult Registered(TestQueue& q, int sig) {
    const int err = q.Change(Sig(sig));
    if (err == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "EV_ADD EVFILT_SIGNAL " << sig << ": " << strerror(err);
  }
};

TEST_F(SignalFilterTest, IgnoredSignalIsCounted) {
  // The NetBSD regression scenario: SIG_IGN, yet the knote counts it.
  ScopedDisposition ign(SIGUSR1, SIG_IGN);
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_TRUE(Registered(*q, SIGUSR1));
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  std::vector<kq_kevent> evs;
  const auto start = SteadyClock::now();
  while (evs.empty() && SteadyClock::now() - start < std::chrono::seconds(5)) {
    evs = q->Collect(8, 100);
  }
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].ident, static_cast<uint64_t>(SIGUSR1));
  EXPECT_EQ(evs[0].filter, EVFILT_SIGNAL);
  EXPECT_EQ(evs[0].data, 1);
  EXPECT_EQ(evs[0].fflags, 0u);
  EXPECT_TRUE(evs[0].flags & EV_CLEAR);  // implied
}

TEST_F(SignalFilterTest, CountsAccumulateUntilCollectedThenClear) {
  ScopedDisposition ign(SIGUSR1, SIG_IGN);
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_EQ(q->Change(Sig(SIGUSR1, EV_ADD, 0xabc)), 0);
  for (int i = 0; i < 3; i++) ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  WaitPendingThenSettle(*q);
  auto evs = q->Collect(8, 0);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].data, 3);
  EXPECT_EQ(evs[0].udata, 0xabcu);
  // EV_CLEAR: nothing more until the next signal, which counts from zero.
  EXPECT_TRUE(q->Collect(8, kSettleMs).empty());
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  EXPECT_EQ(CollectTotal(*q, SIGUSR1, 1), 1);
}

TEST_F(SignalFilterTest, CaughtSignalRunsHandlerAndCounts) {
  g_handled = 0;
  ScopedDisposition handler(SIGUSR2, CountingHandler);
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_TRUE(Registered(*q, SIGUSR2));
  ASSERT_EQ(kill(getpid(), SIGUSR2), 0);
  EXPECT_EQ(CollectTotal(*q, SIGUSR2, 1), 1);
  // Not stolen: the handler ran (on whichever thread took it).
  const auto start = SteadyClock::now();
  while (g_handled.load() == 0 && SteadyClock::now() - start < std::chrono::seconds(5)) {
    SleepMs(5);
  }
  EXPECT_EQ(g_handled.load(), 1);
}

TEST_F(SignalFilterTest, BlockedSignalIsCountedAndStaysPending) {
  // Blocked before the runtime exists, so its threads inherit the mask and
  // no thread of the process can take the signal.
  ScopedDisposition handler(SIGURG, CountingHandler);
  g_handled = 0;
  ScopedBlock block(SIGURG);
  {
    TestRuntime rt;
    auto q = rt.NewQueue();
    ASSERT_TRUE(Registered(*q, SIGURG));
    ASSERT_EQ(kill(getpid(), SIGURG), 0);
    ASSERT_EQ(kill(getpid(), SIGURG), 0);  // already pending: still an attempt
    EXPECT_EQ(CollectTotal(*q, SIGURG, 2), 2);
    sigset_t pending;
    sigpending(&pending);
    EXPECT_TRUE(sigismember(&pending, SIGURG));
    EXPECT_EQ(g_handled.load(), 0);
  }
  // Take it, so unblocking does not run the handler later.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGURG);
  timespec zero{};
  EXPECT_EQ(sigtimedwait(&set, nullptr, &zero), SIGURG);
}

TEST_F(SignalFilterTest, SignalToThreadCreatedLaterIsCounted) {
  g_handled = 0;
  g_handled_tid = 0;
  ScopedDisposition handler(SIGUSR1, CountingHandler);
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_TRUE(Registered(*q, SIGUSR1));

  // A thread created after the registration, signalled at once.
  ParkedThreads thread(1);
  const pid_t tid = thread.tid(0);
  ASSERT_EQ(Tgkill(getpid(), tid, SIGUSR1), 0);
  EXPECT_EQ(CollectTotal(*q, SIGUSR1, 1), 1);
  const auto start = SteadyClock::now();
  while (g_handled.load() == 0 && SteadyClock::now() - start < std::chrono::seconds(5)) {
    SleepMs(5);
  }
  EXPECT_EQ(g_handled_tid.load(), tid);  // delivered to that thread, not stolen

  // kill() naming the thread's id is process-directed but names the
  // thread: the filter must have learnt the thread by now.
  SleepMs(300);
  ASSERT_EQ(kill(tid, SIGUSR1), 0);
  EXPECT_EQ(CollectTotal(*q, SIGUSR1, 1), 1);
}

TEST_F(SignalFilterTest, NullSignalIsNotCounted) {
  ScopedDisposition ign(SIGUSR1, SIG_IGN);
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_TRUE(Registered(*q, SIGUSR1));
  for (int i = 0; i < 3; i++) ASSERT_EQ(kill(getpid(), 0), 0);
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);  // a marker
  EXPECT_EQ(CollectTotal(*q, SIGUSR1, 1), 1);
}

TEST_F(SignalFilterTest, OtherProcessesSignalsAreNotCounted) {
  ScopedDisposition ign(SIGUSR1, SIG_IGN);  // the child inherits it
  WaitingChild child;
  ASSERT_GT(child.pid(), 0);
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_TRUE(Registered(*q, SIGUSR1));
  for (int i = 0; i < 4; i++) ASSERT_EQ(kill(child.pid(), SIGUSR1), 0);
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);  // ours: exactly one
  EXPECT_EQ(CollectTotal(*q, SIGUSR1, 1), 1);
}

TEST_F(SignalFilterTest, EachKqueueCountsAndOtherSignalsDoNot) {
  ScopedDisposition ign1(SIGUSR1, SIG_IGN);
  ScopedDisposition ign2(SIGUSR2, SIG_IGN);
  TestRuntime rt;
  auto a = rt.NewQueue();
  auto b = rt.NewQueue();
  ASSERT_TRUE(Registered(*a, SIGUSR1));
  ASSERT_TRUE(Registered(*b, SIGUSR1));
  ASSERT_TRUE(Registered(*b, SIGUSR2));
  for (int i = 0; i < 2; i++) ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  ASSERT_EQ(kill(getpid(), SIGUSR2), 0);
  EXPECT_EQ(CollectTotal(*a, SIGUSR1, 2), 2);
  WaitPendingThenSettle(*b);
  int64_t usr1 = 0, usr2 = 0;
  for (const kq_kevent& ev : b->Collect(8, 0)) {
    if (ev.ident == SIGUSR1) usr1 += ev.data;
    if (ev.ident == SIGUSR2) usr2 += ev.data;
  }
  EXPECT_EQ(usr1, 2);
  EXPECT_EQ(usr2, 1);
}

TEST_F(SignalFilterTest, DeletedKnoteStopsCountingAndDisabledKeepsCounting) {
  ScopedDisposition ign(SIGUSR1, SIG_IGN);
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_TRUE(Registered(*q, SIGUSR1));
  ASSERT_EQ(q->Change(Sig(SIGUSR1, EV_DISABLE)), 0);
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  SleepMs(kSettleMs);
  EXPECT_TRUE(q->Collect(8, 0).empty());
  ASSERT_EQ(q->Change(Sig(SIGUSR1, EV_ENABLE)), 0);
  EXPECT_EQ(CollectTotal(*q, SIGUSR1, 1), 1);

  ASSERT_EQ(q->Change(Sig(SIGUSR1, EV_DELETE)), 0);
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  SleepMs(kSettleMs);
  // Re-registering starts from zero: the earlier signal is not counted.
  ASSERT_TRUE(Registered(*q, SIGUSR1));
  SleepMs(kSettleMs);
  EXPECT_TRUE(q->Collect(8, 0).empty());
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  EXPECT_EQ(CollectTotal(*q, SIGUSR1, 1), 1);
}

TEST_F(SignalFilterTest, ManyThreadsFallBackAndStillCount) {
  // More threads than a pid filter can name: the filter falls back to
  // signal numbers, counting stays exact.
  ScopedDisposition ign(SIGUSR1, SIG_IGN);
  constexpr int kThreads = 300;
  ParkedThreads threads(kThreads);
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_TRUE(Registered(*q, SIGUSR1));
  for (int i = 0; i < kThreads; i += 20) ASSERT_EQ(Tgkill(getpid(), threads.tid(i), SIGUSR1), 0);
  ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  EXPECT_EQ(CollectTotal(*q, SIGUSR1, kThreads / 20 + 1), kThreads / 20 + 1);
}

TEST_F(SignalFilterTest, ManySignalsAreCountedExactly) {
  ScopedDisposition ign(SIGUSR1, SIG_IGN);
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_TRUE(Registered(*q, SIGUSR1));
  constexpr int kSignals = 1000;
  for (int i = 0; i < kSignals; i++) ASSERT_EQ(kill(getpid(), SIGUSR1), 0);
  EXPECT_EQ(CollectTotal(*q, SIGUSR1, kSignals), kSignals);
}

// Issue 11 #5: a signal generated by a timer (hrtimer interrupt context)
// while the whole process waits on an otherwise idle CPU. Each round arms a
// one-shot timer (setitimer, then a POSIX timer, alternately) and waits in
// sigsuspend() for its handler, so exactly one generation per round; SIGALRM
// stays blocked in every other thread (the reactor's among them), so the
// main thread takes it. The per-CPU perf reader dropped 1-3 % of these (in
// some runs most of one CPU's) while its own event count saw every one;
// with 400 rounds it failed 4 runs of 8.
std::atomic<int> g_alarms{0};
void AlarmHandler(int) { g_alarms++; }

TEST_F(SignalFilterTest, TimerSignalsToAnIdleProcessAreCountedExactly) {
  ScopedDisposition handler(SIGALRM, AlarmHandler);
  ScopedBlock block(SIGALRM);  // before the runtime's threads exist
  TestRuntime rt;
  auto q = rt.NewQueue();
  ASSERT_TRUE(Registered(*q, SIGALRM));
  timer_t posix_timer;
  struct sigevent sev {};
  sev.sigev_notify = SIGEV_SIGNAL;
  sev.sigev_signo = SIGALRM;
  ASSERT_EQ(timer_create(CLOCK_MONOTONIC, &sev, &posix_timer), 0);
  sigset_t wait_mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &wait_mask);
  sigdelset(&wait_mask, SIGALRM);
  constexpr int kRounds = 1500;  // ~2 s; the perf reader failed 9 runs in 10
  g_alarms = 0;
  for (int i = 0; i < kRounds; i++) {
    if (i % 2 == 0) {
      struct itimerval it {};
      it.it_value.tv_usec = 500;
      ASSERT_EQ(setitimer(ITIMER_REAL, &it, nullptr), 0);
    } else {
      struct itimerspec its {};
      its.it_value.tv_nsec = 500000;
      ASSERT_EQ(timer_settime(posix_timer, 0, &its, nullptr), 0);
    }
    while (g_alarms <= i) sigsuspend(&wait_mask);
  }
  timer_delete(posix_timer);
  ASSERT_EQ(g_alarms.load(), kRounds);
  EXPECT_EQ(CollectTotal(*q, SIGALRM, kRounds, 10000), kRounds);
}

TEST_F(SignalFilterTest, InvalidSignalNumbersAreEinval) {
  TestRuntime rt;
  auto q = rt.NewQueue();
  EXPECT_EQ(q->Change(Sig(0)), EINVAL);
  EXPECT_EQ(q->Change(Sig(65)), EINVAL);
  EXPECT_EQ(q->Change(Ev(uint64_t{1} << 40 | SIGUSR1, EVFILT_SIGNAL, EV_ADD)), EINVAL);
  EXPECT_EQ(q->Change(Sig(kqd::kMaxSignalNumber)), 0);  // 64 is a real signal
  EXPECT_EQ(q->Change(Sig(1)), 0);
}

// ---- The record parser, on a format file as Linux 6.x writes it. -------

const char kFormat[] =
    "name: signal_generate\n"
    "ID: 261\n"
    "format:\n"
    "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
    "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
    "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
    "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n"
    "\n"
    "\tfield:int sig;\toffset:8;\tsize:4;\tsigned:1;\n"
    "\tfield:int errno;\toffset:12;\tsize:4;\tsigned:1;\n"
    "\tfield:int code;\toffset:16;\tsize:4;\tsigned:1;\n"
    "\tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;\n"
    "\tfield:pid_t pid;\toffset:36;\tsize:4;\tsigned:1;\n"
    "\tfield:int group;\toffset:40;\tsize:4;\tsigned:1;\n"
    "\tfield:int result;\toffset:44;\tsize:4;\tsigned:1;\n"
    "\n"
    "print fmt: \"sig=%d errno=%d code=%d comm=%s pid=%d grp=%d res=%d\", ...\n";

TEST(SignalTraceFormat, ParsesOffsetsFromTheFormatFile) {
  kqd::SignalTraceFormat f;
  ASSERT_TRUE(kqd::ParseSignalTraceFormat(kFormat, &f));
  EXPECT_EQ(f.sig.offset, 8u);
  EXPECT_EQ(f.pid.offset, 36u);  // not common_pid, not comm
  EXPECT_EQ(f.group.offset, 40u);
  EXPECT_EQ(f.result.offset, 44u);
  EXPECT_EQ(f.pid.size, 4u);
  EXPECT_TRUE(f.pid.is_signed);
}

TEST(SignalTraceFormat, DecodesARecordAndRejectsShortOnes) {
  kqd::SignalTraceFormat f;
  ASSERT_TRUE(kqd::ParseSignalTraceFormat(kFormat, &f));
  uint8_t raw[52] = {};
  int32_t sig = 10, pid = 4321, group = 0, result = kqd::kSignalIgnored;
  memcpy(raw + 8, &sig, 4);
  memcpy(raw + 36, &pid, 4);
  memcpy(raw + 40, &group, 4);
  memcpy(raw + 44, &result, 4);
  kqd::SignalSample s;
  ASSERT_TRUE(kqd::DecodeSignalSample(f, raw, sizeof raw, &s));
  EXPECT_EQ(s.sig, 10);
  EXPECT_EQ(s.pid, 4321);
  EXPECT_EQ(s.group, 0);
  EXPECT_EQ(s.result, kqd::kSignalIgnored);
  EXPECT_FALSE(kqd::DecodeSignalSample(f, raw, 39, &s));
}

TEST(SignalTraceFormat, MissingFieldsAreRefused) {
  kqd::SignalTraceFormat f;
  EXPECT_FALSE(kqd::ParseSignalTraceFormat("format:\n\tfield:int sig;\toffset:8;\tsize:4;\n", &f));
  EXPECT_FALSE(kqd::ParseSignalTraceFormat("", &f));
}

// The ring page layout of kernel 6.x (events/header_page) and a page built
// the way the ring buffer writes one: a discarded event (padding with a time
// delta), a time extension, a short event, a long one (length word), then
// the padding that ends the page.
constexpr const char kHeaderPage[] =
    "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
    "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
    "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
    "\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;\n";

TEST(SignalTraceFormat, DecodesARingPage) {
  kqd::RingPageFormat pf;
  ASSERT_TRUE(kqd::ParseRingPageFormat(kHeaderPage, &pf));
  EXPECT_EQ(pf.commit_offset, 8u);
  EXPECT_EQ(pf.data_offset, 16u);
  EXPECT_EQ(pf.page_size, 4096u);
  kqd::SignalTraceFormat f;
  ASSERT_TRUE(kqd::ParseSignalTraceFormat(kFormat, &f));

  std::vector<uint8_t> page(4096, 0);
  size_t pos = 16;
  auto put32 = [&](uint32_t v) {
    memcpy(page.data() + pos, &v, 4);
    pos += 4;
  };
  auto record = [&](int32_t sig, int32_t pid) {
    uint8_t raw[52] = {};
    int32_t group = 1, result = 0;
    memcpy(raw + 8, &sig, 4);
    memcpy(raw + 36, &pid, 4);
    memcpy(raw + 40, &group, 4);
    memcpy(raw + 44, &result, 4);
    memcpy(page.data() + pos, raw, sizeof raw);
    pos += sizeof raw;
  };
  const uint64_t start = 1000000;
  memcpy(page.data(), &start, 8);
  put32(29 | (5u << 5));  // discarded: 12 bytes of body, 5 ns later
  put32(12);
  pos += 8;
  put32(30 | (7u << 5));  // time extend: (1 << 27) + 7 ns
  put32(1);
  put32(13 | (3u << 5));  // a 52-byte event 3 ns later
  record(10, 77);
  put32(0 | (2u << 5));   // the same as a long event, 2 ns later
  put32(56);
  record(12, 78);
  const uint64_t commit = pos - 16;
  memcpy(page.data() + 8, &commit, 8);
  put32(29);  // end of data

  std::vector<kqd::SignalSample> out;
  bool missed = true;
  ASSERT_TRUE(kqd::DecodeRingPage(pf, f, page.data(), page.size(), &out, &missed));
  EXPECT_FALSE(missed);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].sig, 10);
  EXPECT_EQ(out[0].pid, 77);
  EXPECT_EQ(out[0].time_ns, start + 5 + (1ULL << 27) + 7 + 3);
  EXPECT_EQ(out[1].sig, 12);
  EXPECT_EQ(out[1].pid, 78);
  EXPECT_EQ(out[1].time_ns, out[0].time_ns + 2);

  // The kernel's flag for events missed before the page.
  const uint64_t flagged = commit | (1ULL << 31);
  memcpy(page.data() + 8, &flagged, 8);
  out.clear();
  ASSERT_TRUE(kqd::DecodeRingPage(pf, f, page.data(), page.size(), &out, &missed));
  EXPECT_TRUE(missed);
  EXPECT_EQ(out.size(), 2u);
  // A commit beyond what was read is refused.
  EXPECT_FALSE(kqd::DecodeRingPage(pf, f, page.data(), 64, &out, &missed));
}

}  // namespace
