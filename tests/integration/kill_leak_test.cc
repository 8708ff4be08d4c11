// The kill/leak test of issue 12: 1000 client processes (uid 65534) parked
// in kevent on a private daemon are SIGKILLed together. Within one second
// of their exit the daemon's descriptors and threads are back at their
// baseline, its per-uid counters are zero (KQ_IOC_STAT; the same user can
// again open its whole quota of kqueues), and its anonymous memory is back
// too (the daemon trims its heap after releases: without that it stayed
// 2.5 MiB above).
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/raw_kevent.h"

namespace kqd {
namespace testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kClients = 1000;
constexpr uid_t kUser = 65534;
// Anonymous resident memory (heap, stacks) may stay this far above the
// baseline after a burst: the stacks of spare serving threads that retired
// after the burst stay resident in the C library's cache for the next ones,
// and the allocator keeps partly used pages (0.1-1.3 MiB measured, varying
// with the heap's layout from run to run). 1000 clients' worth of state is
// over 3 MiB, so keeping it all still shows.
constexpr long kRssSlackKib = 2048;
// What a leak looks like: growth from round to round. Measured (once the
// trim has run): the level after each burst wanders by under 0.5 MiB; a
// leak of a KiB per client adds 1 MiB a round, 2 MiB by the third.
constexpr long kGrowthSlackKib = 1024;
constexpr int kRounds = 3;

// Under AddressSanitizer (the ASan tier builds the daemon with it too) freed
// memory sits in the sanitizer's quarantine and its allocator ignores
// malloc_trim: memory is not checked there.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCheckMemory = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCheckMemory = false;
#else
constexpr bool kCheckMemory = true;
#endif
#else
constexpr bool kCheckMemory = true;
#endif

size_t CountEntries(const std::string& dir) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    n++;
  return n;
}

struct Usage {
  size_t fds = 0;
  size_t threads = 0;
  long rss_kib = 0;
  long anon_kib = 0;  // RssAnon: the heap, stacks; not the program's pages
  double cpu_ms = 0;  // user + system time so far
};

Usage UsageOf(pid_t pid) {
  Usage u;
  const std::string base = "/proc/" + std::to_string(pid);
  u.fds = CountEntries(base + "/fd");
  u.threads = CountEntries(base + "/task");
  std::ifstream status(base + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) u.rss_kib = std::stol(line.substr(6));
    if (line.rfind("RssAnon:", 0) == 0) u.anon_kib = std::stol(line.substr(8));
  }
  std::ifstream stat(base + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  if (paren != std::string::npos) {
    std::istringstream fields(text.substr(paren + 2));
    std::string f;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && fields >> f; i++) {
      if (i == 14) utime = std::stoull(f);
      if (i == 15) stime = std::stoull(f);
    }
    u.cpu_ms = 1000.0 * static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
  }
  return u;
}

bool BecomeUser() {
  return setgroups(0, nullptr) == 0 && setgid(kUser) == 0 && setuid(kUser) == 0;
}

// `clients` processes as kUser, each with a timer knote and parked in a
// kevent that waits forever, in one process group; returns its id once all
// are parked (each writes a byte when its knote is in place).
pid_t ParkClients(const std::string& device, int clients) {
  int ready[2];
  if (pipe(ready) != 0) return -1;
  pid_t leader = 0;
  for (int i = 0; i < clients; i++) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
      close(ready[0]);
      setpgid(0, leader);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (!BecomeUser()) _exit(1);
      int kq = open(device.c_str(), O_RDWR);
      if (kq < 0) _exit(2);
      // Something for the daemon to clean up: an hour-long timer.
      if (Change(kq, Ev(1, EVFILT_TIMER, EV_ADD, NOTE_SECONDS, 3600)) != 0) _exit(3);
      char c = 1;
      if (write(ready[1], &c, 1) != 1) _exit(4);
      kq_kevent ev;
      Kevent(kq, nullptr, 0, &ev, 1, -1);  // parked until killed
      _exit(5);
    }
    if (leader == 0) leader = pid;
    setpgid(pid, leader);
  }
  close(ready[1]);
  int got = 0;
  char buf[256];
  while (got < clients) {
    ssize_t n = read(ready[0], buf, sizeof buf);
    if (n <= 0) break;
    got += static_cast<int>(n);
  }
  close(ready[0]);
  if (got < clients) {
    kill(-leader, SIGKILL);
    return -1;
  }
  // Let the last ones reach the daemon and park.
  std::this_thread::sleep_for(milliseconds(300));
  return leader;
}

// How many kqueues kUser can open now (its quota is 1024).
int KqueuesUserCanOpen(const std::string& device) {
  int p[2];
  if (pipe(p) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    int n = 0;
    if (BecomeUser()) {
      while (n < 2000 && open(device.c_str(), O_RDWR) >= 0) n++;
    }
    if (write(p[1], &n, sizeof n) != sizeof n) _exit(1);
    _exit(0);
  }
  close(p[1]);
  int n = -1;
  if (read(p[0], &n, sizeof n) != sizeof n) n = -1;
  close(p[0]);
  waitpid(pid, nullptr, 0);
  return n;
}

// What uid `uid` holds in the daemon, by KQ_RES_* (all zero if nothing),
// asked through root's kqueue `kq` (root sees every user).
bool UserUsage(int kq, uid_t uid, std::vector<uint64_t>* used) {
  used->assign(KQ_STAT_RESOURCES, 0);
  std::vector<char> buf(1 << 20);
  kq_stat_args args{};
  args.buf = reinterpret_cast<uint64_t>(buf.data());
  args.buf_size = buf.size();
  int n = ioctl(kq, KQ_IOC_STAT, &args);
  if (n <= 0) return false;
  kq_stat_header h;
  std::memcpy(&h, buf.data(), sizeof h);
  size_t at = h.header_size + static_cast<size_t>(h.nqueues) * h.queue_size;
  for (uint32_t i = 0; i < h.nusers; i++, at += h.user_size) {
    kq_stat_user u;
    std::memcpy(&u, buf.data() + at, sizeof u);
    if (u.uid == uid) used->assign(u.used, u.used + KQ_STAT_RESOURCES);
  }
  return true;
}

bool HoldsNothing(const std::vector<uint64_t>& used) {
  for (uint64_t n : used)
    if (n != 0) return false;
  return true;
}

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// The clock starts when the last client has been reaped: the kernel takes
// that long (0.5-1.5 s on a loaded 2-vCPU machine, most of it tearing down
// 1000 address spaces) to close the clients' descriptors, and nothing can
// be released before. (A killed client waits in the kernel for the
// daemon's answer to its interrupted call, so a slow daemon would show in
// the reap time too: its CPU time over the whole teardown is bounded
// below.)
TEST(KillLeak, ThousandParkedClientsKilledTogetherLeaveNothingBehind) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  if (getenv("KQUEUED_EXTERNAL_DEVICE")) GTEST_SKIP() << "needs a daemon of its own";
  std::string error;
  auto daemon = DaemonFixture::Start(&error);
  ASSERT_TRUE(daemon) << error;
  // Root's kqueue for KQ_IOC_STAT, opened before the baseline is taken (its
  // caller's cache entries belong to the baseline).
  const int stat_kq = open(daemon->device().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(stat_kq, 0);
  const int quota = KqueuesUserCanOpen(daemon->device());
  ASSERT_GT(quota, kClients) << "the user's kqueue quota must exceed the client count";
  // The baseline is the daemon once it has served one round like those
  // below (untimed): what it grows once to its high-water mark — code paged
  // in, a spare serving thread's stack kept by the C library for the next
  // one, hash tables' bucket arrays, which never shrink (about 0.6 MiB
  // after the first 1000 clients) — is not a leak; three more rounds must
  // each come back to it. Then wait for the probe's and the warm-up's
  // kqueues to go, and the daemon's trim.
  pid_t warm_up = ParkClients(daemon->device(), kClients);
  ASSERT_GT(warm_up, 0);
  ASSERT_EQ(kill(-warm_up, SIGKILL), 0);
  for (int i = 0; i < kClients; i++) waitpid(-warm_up, nullptr, 0);
  std::this_thread::sleep_for(milliseconds(500));
  const Usage baseline = UsageOf(daemon->pid());
  std::vector<uint64_t> used;
  ASSERT_TRUE(UserUsage(stat_kq, kUser, &used));
  ASSERT_TRUE(HoldsNothing(used));

  long first_round_anon_kib = -1;
  for (int round = 0; round < kRounds; round++) {
    pid_t group = ParkClients(daemon->device(), kClients);
    ASSERT_GT(group, 0) << "could not park " << kClients << " clients";
    const Usage busy = UsageOf(daemon->pid());
    ASSERT_TRUE(UserUsage(stat_kq, kUser, &used));
    ASSERT_EQ(used[KQ_RES_KQUEUES], static_cast<uint64_t>(kClients));
    ASSERT_EQ(used[KQ_RES_TIMERS], static_cast<uint64_t>(kClients));
    const auto killed = Clock::now();
    ASSERT_EQ(kill(-group, SIGKILL), 0);
    for (int i = 0; i < kClients; i++) waitpid(-group, nullptr, 0);
    const auto reaped = Clock::now();
    const double reaped_ms = MsSince(killed);
    // Descriptors, threads and the user's counters back to baseline.
    Usage now = UsageOf(daemon->pid());
    bool counters_back = false;
    for (;;) {
      counters_back = UserUsage(stat_kq, kUser, &used) && HoldsNothing(used);
      if ((now.fds <= baseline.fds && now.threads <= baseline.threads && counters_back) ||
          MsSince(reaped) > 5000)
        break;
      std::this_thread::sleep_for(milliseconds(10));
      now = UsageOf(daemon->pid());
    }
    const double back_ms = MsSince(reaped);
    // Memory: the heap freed by the teardown is given back (a trim 100 ms
    // after the last release, which may come just before the counters read
    // zero): give the trim its time before reading the level.
    if (kCheckMemory) {
      std::this_thread::sleep_for(milliseconds(250));
      now = UsageOf(daemon->pid());
    }
    while (kCheckMemory && now.anon_kib > baseline.anon_kib + kRssSlackKib && MsSince(reaped) < back_ms + 1000) {
      std::this_thread::sleep_for(milliseconds(10));
      now = UsageOf(daemon->pid());
    }
    const double rss_back_ms = MsSince(reaped);
    std::printf("round %d: fds %zu -> %zu -> %zu, threads %zu -> %zu -> %zu, RSS %ld -> %ld -> "
                "%ld KiB (anon %ld -> %ld -> %ld); clients reaped %.0f ms after the kill; baseline %.0f ms (RSS %.0f ms) "
                "after that; daemon CPU for the teardown %.0f ms\n",
                round, baseline.fds, busy.fds, now.fds, baseline.threads, busy.threads,
                now.threads, baseline.rss_kib, busy.rss_kib, now.rss_kib, baseline.anon_kib,
                busy.anon_kib, now.anon_kib, reaped_ms, back_ms,
                rss_back_ms, now.cpu_ms - busy.cpu_ms);
    EXPECT_LE(now.fds, baseline.fds) << "descriptors left behind (pidfds of dead clients?)";
    EXPECT_LE(now.threads, baseline.threads);
    EXPECT_TRUE(counters_back) << "uid " << kUser << " still holds kqueues " << used[0]
                               << ", knotes " << used[1] << ", timers " << used[2];
    EXPECT_LT(back_ms, 1000.0);
    if (kCheckMemory) {
      EXPECT_LE(now.anon_kib, baseline.anon_kib + kRssSlackKib) << "memory not given back";
      EXPECT_LT(rss_back_ms, 1000.0);
      if (first_round_anon_kib < 0) first_round_anon_kib = now.anon_kib;
      if (round == kRounds - 1) {
        EXPECT_LE(now.anon_kib, first_round_anon_kib + kGrowthSlackKib)
            << "memory grows from round to round (" << first_round_anon_kib << " KiB after the "
            << "first, " << now.anon_kib << " KiB after the last): a leak per client";
      }
    }
    EXPECT_LT(now.cpu_ms - busy.cpu_ms, 1000.0) << "the daemon works too hard on dead clients";
    // The user's whole kqueue quota is free again.
    EXPECT_EQ(KqueuesUserCanOpen(daemon->device()), quota);
    std::this_thread::sleep_for(milliseconds(300));
  }
  close(stat_kq);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
