// issue 12 item 4: one user's very fast timers must not cost the daemon
// more than a bounded share of its event loop, and another user's timer
// stays on time meanwhile. The attacker is unprivileged (uid 65534), as in
// the review; the daemon is a private one, so its CPU time is ours to read.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/raw_kevent.h"

namespace kqd {
namespace testing {
namespace {

using Clock = std::chrono::steady_clock;

// utime + stime of `pid`, in clock ticks.
long CpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t paren = all.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream rest(all.substr(paren + 2));
  std::string field;
  long utime = 0, stime = 0;
  // Fields 3.. after the name; utime is 14, stime 15.
  for (int i = 3; i <= 15 && rest >> field; i++) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

// A child as uid 65534 with `n` timers of a 1 ns period on its own kqueue,
// never collecting them; it reports readiness on `ready` and waits to die.
pid_t StartAttacker(const std::string& device, int n, int* added) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(pipefd[0]);
    int count = -1;
    if (setgroups(0, nullptr) == 0 && setgid(65534) == 0 && setuid(65534) == 0) {
      int kq = open(device.c_str(), O_RDWR);
      count = 0;
      for (int i = 0; kq >= 0 && i < n; i++) {
        kq_kevent t = Ev(i + 1, EVFILT_TIMER, EV_ADD, NOTE_NSECONDS, 1);
        if (Change(kq, t) == 0) count++;
      }
    }
    if (write(pipefd[1], &count, sizeof count) != sizeof count) _exit(1);
    for (;;) pause();
  }
  close(pipefd[1]);
  if (read(pipefd[0], added, sizeof *added) != sizeof *added) *added = -1;
  close(pipefd[0]);
  return pid;
}

TEST(TimerFairness, FastTimersOfOneUserCostBoundedLoopTimeAndOthersStayOnTime) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  std::string error;
  auto daemon = DaemonFixture::Start(&error);
  ASSERT_TRUE(daemon) << error;
  if (getenv("KQUEUED_EXTERNAL_DEVICE")) GTEST_SKIP() << "needs a daemon of its own";

  constexpr int kTimers = 1000;
  int added = 0;
  pid_t attacker = StartAttacker(daemon->device(), kTimers, &added);
  ASSERT_GT(attacker, 0);
  EXPECT_EQ(added, kTimers);

  // The victim (this process, root): a 20 ms periodic timer for 1 s.
  int kq = daemon->OpenKqueue();
  ASSERT_GE(kq, 0);
  const long ticks_before = CpuTicks(daemon->pid());
  const auto start = Clock::now();
  kq_kevent t = Ev(1, EVFILT_TIMER, EV_ADD, 0, 20);
  ASSERT_EQ(Change(kq, t), 0);
  int64_t count = 0;
  std::vector<double> late_ms;
  while (Clock::now() - start < std::chrono::milliseconds(1000)) {
    kq_kevent ev{};
    int n = KeventRetryingEintr(kq, nullptr, 0, &ev, 1, 200);
    ASSERT_GE(n, 0) << strerror(errno);
    if (n == 0) continue;
    count += ev.data;
    // The count-th expiration was due at start + count * 20 ms.
    const double due = 20.0 * count;
    const double now = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    late_ms.push_back(now - due);
  }
  const double elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  const long ticks = CpuTicks(daemon->pid()) - ticks_before;
  kill(attacker, SIGKILL);
  waitpid(attacker, nullptr, 0);
  close(kq);

  const double cpu_share = ticks / (elapsed_s * sysconf(_SC_CLK_TCK));
  std::sort(late_ms.begin(), late_ms.end());
  const double median_late = late_ms.empty() ? 1e9 : late_ms[late_ms.size() / 2];
  std::printf("attacker: %d timers of 1 ns; daemon CPU %.1f %% of a core; victim: %lld of ~%d "
              "expirations, %zu wake-ups, median lateness %.2f ms\n",
              added, cpu_share * 100, static_cast<long long>(count),
              static_cast<int>(elapsed_s * 50), late_ms.size(), median_late);
  // One user's fast timers wake the loop at most 4000 times a second in
  // all (timer_filter.h): a bounded share of a core, not all of it.
  // Measured with the bound: 13-18 % in the plain build on a loaded
  // machine, 15 % under ASan; without it 30-100 % (issue 12, item 4).
  EXPECT_LT(cpu_share, 0.25);
  // The victim's timer counted every period and was delivered on time.
  EXPECT_GE(count, static_cast<int64_t>(elapsed_s * 50) - 3);
  EXPECT_LT(median_late, 5.0);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
