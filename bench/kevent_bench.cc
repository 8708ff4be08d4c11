// kevent_bench: what a kevent round trip through kqueued costs (wall time:
// the work happens in another process), next to the
// in-kernel baseline (epoll) on the same machine in the same run. Syscall
// costs vary a lot between machines and VMs: compare the ratios, not the
// absolute times across runs.
//
//   bazel run -c opt //bench:kevent_bench     (starts a private daemon)
//   KQUEUE_DEVICE=/dev/kqueue bazel-bin/bench/kevent_bench --external
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/raw_kevent.h"

namespace {

using kqd::testing::Change;
using kqd::testing::Ev;
using kqd::testing::Kevent;

int OpenQueue() {
  int kq = kqd::testing::SharedDaemon().OpenKqueue();
  if (kq < 0) {
    std::perror("open kqueue device");
    std::exit(1);
  }
  return kq;
}

// Baseline: an empty epoll_wait (the cheapest readiness syscall).
void BM_EpollWaitEmpty(benchmark::State& state) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev;
  for (auto _ : state) benchmark::DoNotOptimize(epoll_wait(ep, &ev, 1, 0));
  close(ep);
}
BENCHMARK(BM_EpollWaitEmpty);

// A kevent poll that finds nothing: one ioctl round trip to the daemon.
void BM_KeventPollEmpty(benchmark::State& state) {
  int kq = OpenQueue();
  kq_kevent out;
  for (auto _ : state) benchmark::DoNotOptimize(Kevent(kq, nullptr, 0, &out, 1, 0));
  close(kq);
}
BENCHMARK(BM_KeventPollEmpty)->UseRealTime();

// Baseline: eventfd write + epoll_wait that returns it.
void BM_EpollEventfdWake(benchmark::State& state) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ee{};
  ee.events = EPOLLIN | EPOLLET;
  epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ee);
  uint64_t one = 1;
  for (auto _ : state) {
    benchmark::DoNotOptimize(write(efd, &one, sizeof one));
    benchmark::DoNotOptimize(epoll_wait(ep, &ee, 1, 0));
  }
  close(efd);
  close(ep);
}
BENCHMARK(BM_EpollEventfdWake);

// EVFILT_USER trigger and collect in ONE kevent call.
void BM_KeventUserTriggerCollect(benchmark::State& state) {
  int kq = OpenQueue();
  Change(kq, Ev(1, EVFILT_USER, EV_ADD | EV_CLEAR));
  kq_kevent trig = Ev(1, EVFILT_USER, 0, NOTE_TRIGGER);
  kq_kevent out;
  for (auto _ : state) benchmark::DoNotOptimize(Kevent(kq, &trig, 1, &out, 1, 0));
  close(kq);
}
BENCHMARK(BM_KeventUserTriggerCollect)->UseRealTime();

// A readable pipe collected (level-triggered): daemon evaluates the fd
// (pidfd_getfd + FIONREAD) on each collection.
void BM_KeventPipeReadable(benchmark::State& state) {
  int kq = OpenQueue();
  int p[2];
  if (pipe(p) != 0) std::abort();
  if (write(p[1], "x", 1) != 1) std::abort();
  Change(kq, Ev(p[0], EVFILT_READ, EV_ADD));
  kq_kevent out;
  for (auto _ : state) benchmark::DoNotOptimize(Kevent(kq, nullptr, 0, &out, 1, 0));
  close(p[0]);
  close(p[1]);
  close(kq);
}
BENCHMARK(BM_KeventPipeReadable)->UseRealTime();

// Collecting many ready events in one call: per-event cost.
void BM_KeventCollectMany(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  int kq = OpenQueue();
  std::vector<kq_kevent> changes;
  for (size_t i = 0; i < n; i++) changes.push_back(Ev(i + 1, EVFILT_USER, EV_ADD, NOTE_TRIGGER));
  Kevent(kq, changes.data(), changes.size(), nullptr, 0, 0);
  std::vector<kq_kevent> out(n);
  for (auto _ : state) benchmark::DoNotOptimize(Kevent(kq, nullptr, 0, out.data(), n, 0));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
  close(kq);
}
BENCHMARK(BM_KeventCollectMany)->Arg(16)->Arg(1024)->Arg(16384)->UseRealTime();

// Registering and deleting a READ knote on a pipe.
void BM_KeventRegisterDeletePipe(benchmark::State& state) {
  int kq = OpenQueue();
  int p[2];
  if (pipe(p) != 0) std::abort();
  kq_kevent both[2] = {Ev(p[0], EVFILT_READ, EV_ADD), Ev(p[0], EVFILT_READ, EV_DELETE)};
  for (auto _ : state) benchmark::DoNotOptimize(Kevent(kq, both, 2, nullptr, 0, 0));
  close(p[0]);
  close(p[1]);
  close(kq);
}
BENCHMARK(BM_KeventRegisterDeletePipe)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  // --external: use $KQUEUE_DEVICE as it is (a daemon already running).
  std::vector<char*> args;
  for (int i = 0; i < argc; i++) {
    if (std::strcmp(argv[i], "--external") == 0) {
      const char* dev = std::getenv(KQ_DEVICE_ENV);
      setenv("KQUEUED_EXTERNAL_DEVICE", dev ? dev : KQ_DEFAULT_DEVICE, 1);
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
