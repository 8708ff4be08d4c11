// throughput_bench: aggregate kevent throughput of several client processes
// against one daemon, and what one hostile request does to everyone else.
// A program that prints figures, not a test.
//
//   bazel build -c opt //bench:throughput_bench && bazel-bin/bench/throughput_bench
//   KQUEUED_EXTERNAL_DEVICE=/path/to/kqueue bazel-bin/bench/throughput_bench
//
// Each client process opens its own kqueue and repeats the smallest request
// there is, a zero-timeout KQ_IOC_KEVENT with no changes and room for one
// event, for a fixed time. Printed per placement (everything on CPU 0, or
// left to the scheduler) and per client count (1, 2, 8):
//   - aggregate ops/s (all clients' calls per second of wall time);
//   - the median and 99th percentile latency of one call (µs);
//   - the daemon's thread count right after the row.
// Then, unpinned: the same single client while a hog process sends kevent
// calls whose changelist is 64 MiB of untouched (zero) pages and whose
// eventlist has room for every answer, so each change is applied and
// answered with an EV_ERROR; printed: the victim's ops/s, its worst call, and
// how long the hog's calls take.
//
// Options: --seconds S (per measurement, default 1), --no-hog.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <memory>
#include <string>
#include <vector>

#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/ev.h"
#include "tests/support/raw_kevent.h"

namespace {

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Sets the CPU mask of every thread of `pid` (threads created later inherit
// it from their creator). cpu < 0: every CPU.
void PlaceProcess(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu >= 0) {
    CPU_SET(cpu, &set);
  } else {
    for (int i = 0; i < CPU_SETSIZE; i++) CPU_SET(i, &set);
  }
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    sched_setaffinity(static_cast<pid_t>(atoi(e->d_name)), sizeof set, &set);
  }
  closedir(d);
}

struct ClientResult {
  uint64_t ops = 0;
  double median_us = 0;
  double p99_us = 0;
  double max_us = 0;
};

// Runs in a child: waits for the start byte, then calls for `ns`.
ClientResult RunClient(const std::string& device, int start_fd, int64_t ns) {
  ClientResult r;
  int kq = open(device.c_str(), O_RDWR | O_CLOEXEC);
  if (kq < 0) {
    std::perror("open kqueue device");
    _exit(1);
  }
  char go;
  if (read(start_fd, &go, 1) != 1) _exit(1);
  std::vector<uint32_t> samples;
  samples.reserve(1 << 20);
  kq_kevent out;
  const int64_t end = NowNs() + ns;
  int64_t t = NowNs();
  while (t < end) {
    if (kqd::testing::Kevent(kq, nullptr, 0, &out, 1, 0) < 0) {
      std::perror("kevent");
      _exit(1);
    }
    int64_t t2 = NowNs();
    if (samples.size() < samples.capacity()) samples.push_back(static_cast<uint32_t>(t2 - t));
    t = t2;
    r.ops++;
  }
  close(kq);
  if (!samples.empty()) {
    std::sort(samples.begin(), samples.end());
    r.median_us = samples[samples.size() / 2] / 1000.0;
    r.p99_us = samples[samples.size() * 99 / 100] / 1000.0;
    r.max_us = samples.back() / 1000.0;
  }
  return r;
}

// Runs `clients` processes for `ns`; cpu >= 0 pins them there.
std::vector<ClientResult> RunClients(const std::string& device, int clients, int cpu,
                                     int64_t ns) {
  int start[2];
  if (pipe(start) != 0) std::abort();
  std::vector<std::pair<pid_t, int>> kids;
  for (int i = 0; i < clients; i++) {
    int res[2];
    if (pipe(res) != 0) std::abort();
    pid_t pid = fork();
    if (pid == 0) {
      close(start[1]);
      close(res[0]);
      if (cpu >= 0) PlaceProcess(getpid(), cpu);
      ClientResult r = RunClient(device, start[0], ns);
      if (write(res[1], &r, sizeof r) != sizeof r) _exit(1);
      _exit(0);
    }
    close(res[1]);
    kids.emplace_back(pid, res[0]);
  }
  close(start[0]);
  usleep(100000);  // every client has opened its kqueue
  std::string go(static_cast<size_t>(clients), 'g');
  if (write(start[1], go.data(), go.size()) != static_cast<ssize_t>(go.size())) std::abort();
  close(start[1]);
  std::vector<ClientResult> results;
  for (auto& [pid, fd] : kids) {
    ClientResult r;
    if (read(fd, &r, sizeof r) != sizeof r) {
      std::fprintf(stderr, "client %d failed\n", pid);
      std::exit(1);
    }
    close(fd);
    waitpid(pid, nullptr, 0);
    results.push_back(r);
  }
  return results;
}

// The hog: repeats one kevent whose changelist and eventlist are `bytes` of
// untouched anonymous memory (zero pages to read; the EV_ERROR answers make
// the daemon write every eventlist page too). Prints each call's duration
// until killed.
pid_t StartHog(const std::string& device, size_t bytes, int report_fd) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  int kq = open(device.c_str(), O_RDWR | O_CLOEXEC);
  void* changes = mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void* events = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (kq < 0 || changes == MAP_FAILED || events == MAP_FAILED) _exit(1);
  const size_t n = bytes / sizeof(kq_kevent);
  for (;;) {
    int64_t t = NowNs();
    int rc = kqd::testing::Kevent(kq, static_cast<kq_kevent*>(changes), n,
                                  static_cast<kq_kevent*>(events), n, 0);
    int64_t took = NowNs() - t;
    int64_t msg[2] = {took, rc < 0 ? -errno : rc};
    if (write(report_fd, msg, sizeof msg) != sizeof msg) _exit(0);
  }
}

int CountThreads(pid_t pid) {
  if (pid <= 0) return -1;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

void PrintRow(const char* placement, int clients, const std::vector<ClientResult>& rs,
              double seconds, int daemon_threads) {
  uint64_t total = 0;
  std::vector<double> med, p99;
  for (const auto& r : rs) {
    total += r.ops;
    med.push_back(r.median_us);
    p99.push_back(r.p99_us);
  }
  std::sort(med.begin(), med.end());
  std::sort(p99.begin(), p99.end());
  std::printf("%-9s %7d %12.0f %12.1f %12.1f %8d\n", placement, clients, total / seconds,
              med[med.size() / 2], p99.back(), daemon_threads);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 1.0;
  bool hog = true;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
      seconds = atof(argv[++i]);
    } else if (!strcmp(argv[i], "--no-hog")) {
      hog = false;
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--no-hog]\n", argv[0]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  const kqd::testing::DaemonFixture& daemon = kqd::testing::SharedDaemon();
  const std::string device = daemon.device();
  const pid_t daemon_pid = daemon.pid();  // -1 for an external daemon
  const int64_t ns = static_cast<int64_t>(seconds * 1e9);
  std::printf("kevent throughput, zero-timeout empty KQ_IOC_KEVENT, %.1f s per row, %ld CPUs\n",
              seconds, sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("%-9s %7s %12s %12s %12s %8s\n", "placement", "clients", "ops/s", "median µs",
              "worst p99 µs", "threads");
  for (int pinned = 1; pinned >= 0; pinned--) {
    const int cpu = pinned ? 0 : -1;
    if (daemon_pid > 0) PlaceProcess(daemon_pid, cpu);
    for (int clients : {1, 2, 8}) {
      std::vector<ClientResult> rs = RunClients(device, clients, cpu, ns);
      PrintRow(pinned ? "cpu0" : "unpinned", clients, rs, seconds, CountThreads(daemon_pid));
    }
  }
  if (daemon_pid > 0) PlaceProcess(daemon_pid, -1);
  if (!hog) return 0;

  int rep[2];
  if (pipe2(rep, O_CLOEXEC) != 0) return 1;
  const size_t hog_bytes = 64u << 20;
  pid_t hog_pid = StartHog(device, hog_bytes, rep[1]);
  close(rep[1]);
  usleep(50000);  // the hog's first call is under way
  std::vector<ClientResult> victim = RunClients(device, 1, -1, ns * 2);
  kill(hog_pid, SIGKILL);
  waitpid(hog_pid, nullptr, 0);
  std::vector<double> hog_ms;
  int64_t msg[2];
  int64_t last_rc = 0;
  while (read(rep[0], msg, sizeof msg) == sizeof msg) {
    hog_ms.push_back(msg[0] / 1e6);
    last_rc = msg[1];
  }
  close(rep[0]);
  std::printf("\nwith a hog (unpinned; the hog's kevent: %zu MiB of zero-page changes, every one "
              "answered):\n",
              hog_bytes >> 20);
  std::printf("  victim: %.0f ops/s, median %.1f µs, worst %.1f µs\n", victim[0].ops / (seconds * 2),
              victim[0].median_us, victim[0].max_us);
  if (hog_ms.empty()) {
    std::printf("  hog: no call finished during the run (each takes > %.1f s)\n", seconds * 2);
  } else {
    std::sort(hog_ms.begin(), hog_ms.end());
    std::printf("  hog: %zu calls finished, median %.0f ms each (last result %lld)\n", hog_ms.size(),
                hog_ms[hog_ms.size() / 2], static_cast<long long>(last_rc));
  }
  return 0;
}
