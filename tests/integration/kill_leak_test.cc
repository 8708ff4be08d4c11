// The kill/leak test of issue 12: 1000 client processes (uid 65534) parked
// in kevent on a private daemon are SIGKILLed together. Within one second
// the daemon's descriptors and threads are back at their baseline, its
// per-uid counters too (the same user can again open its whole quota of
// kqueues), and a second round does not grow its memory.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
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
};

Usage UsageOf(pid_t pid) {
  Usage u;
  const std::string base = "/proc/" + std::to_string(pid);
  u.fds = CountEntries(base + "/fd");
  u.threads = CountEntries(base + "/task");
  std::ifstream status(base + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) u.rss_kib = std::stol(line.substr(6));
  return u;
}

bool BecomeUser() {
  return setgroups(0, nullptr) == 0 && setgid(kUser) == 0 && setuid(kUser) == 0;
}

// kClients processes as kUser, each with a timer knote and parked in a
// kevent that waits forever, in one process group; returns its id once all
// are parked (each writes a byte when its knote is in place).
pid_t ParkClients(const std::string& device) {
  int ready[2];
  if (pipe(ready) != 0) return -1;
  pid_t leader = 0;
  for (int i = 0; i < kClients; i++) {
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
  while (got < kClients) {
    ssize_t n = read(ready[0], buf, sizeof buf);
    if (n <= 0) break;
    got += static_cast<int>(n);
  }
  close(ready[0]);
  if (got < kClients) {
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

TEST(KillLeak, ThousandParkedClientsKilledTogetherLeaveNothingBehind) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  if (getenv("KQUEUED_EXTERNAL_DEVICE")) GTEST_SKIP() << "needs a daemon of its own";
  std::string error;
  auto daemon = DaemonFixture::Start(&error);
  ASSERT_TRUE(daemon) << error;
  const int quota = KqueuesUserCanOpen(daemon->device());
  ASSERT_GT(quota, kClients) << "the user's kqueue quota must exceed the client count";
  // The quota probe's own kqueues are gone once it has exited; wait for it.
  std::this_thread::sleep_for(milliseconds(200));
  const Usage baseline = UsageOf(daemon->pid());

  long rss_after_first = 0;
  for (int round = 0; round < 2; round++) {
    pid_t group = ParkClients(daemon->device());
    ASSERT_GT(group, 0) << "could not park " << kClients << " clients";
    const Usage busy = UsageOf(daemon->pid());
    const auto killed = Clock::now();
    ASSERT_EQ(kill(-group, SIGKILL), 0);
    for (int i = 0; i < kClients; i++) waitpid(-group, nullptr, 0);
    // Back to baseline within a second of the kill.
    Usage now = UsageOf(daemon->pid());
    while ((now.fds > baseline.fds || now.threads > baseline.threads) &&
           Clock::now() - killed < milliseconds(3000)) {
      std::this_thread::sleep_for(milliseconds(10));
      now = UsageOf(daemon->pid());
    }
    const double took_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - killed).count();
    std::printf("round %d: fds %zu -> %zu -> %zu, threads %zu -> %zu -> %zu, RSS %ld -> %ld -> "
                "%ld KiB, back after %.0f ms\n",
                round, baseline.fds, busy.fds, now.fds, baseline.threads, busy.threads,
                now.threads, baseline.rss_kib, busy.rss_kib, now.rss_kib, took_ms);
    EXPECT_LE(now.fds, baseline.fds) << "descriptors left behind (pidfds of dead clients?)";
    EXPECT_LE(now.threads, baseline.threads);
    EXPECT_LT(took_ms, 1000.0);
    // Per-uid counters: the user's whole kqueue quota is free again.
    EXPECT_EQ(KqueuesUserCanOpen(daemon->device()), quota);
    std::this_thread::sleep_for(milliseconds(200));
    if (round == 0) {
      rss_after_first = UsageOf(daemon->pid()).rss_kib;
    } else {
      // A second identical round reuses the memory of the first: no leak
      // of a few KiB per client (1000 clients).
      EXPECT_LE(UsageOf(daemon->pid()).rss_kib, rss_after_first + 1024);
    }
  }
}

}  // namespace
}  // namespace testing
}  // namespace kqd
