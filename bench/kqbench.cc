// kqbench: the figures of the fast-path issue, in one run, next to epoll and
// next to the smallest FUSE server answering one ioctl (the transport's
// floor). A program that prints figures, not a test.
//
//   bazel run -c opt //bench:kqbench                 (both placements)
//   bazel run -c opt //bench:kqbench -- --quick      (shorter samples)
//
// It starts its own private daemon (the kqueued next to it in the runfiles,
// or --daemon PATH) on a private path and its own floor server, and stops
// both at the end. Each figure is measured twice: "pinned" (this process,
// every thread of the daemon and of the floor server on CPU 0 — the
// placement the targets are stated for; cross-CPU wake-ups on a VM
// cost tens of µs and would swamp everything) and "unpinned" (the
// scheduler decides). Each figure is the best of many ~2 ms batches (see
// BestNs).
//
// Columns: epoll (the kernel's own readiness interface), lib (kevent() of
// the C library: what programs call; with an ABI 4 daemon it answers calls
// about pipes from its own epoll instance — the fast path — and takes the
// inline ioctls for the rest), lib ioctl (the same kevent() on a queue made
// with KQUEUE_LOCAL=0: every call through the daemon, inline ioctls for
// calls of up to 408 records when the daemon has them, ABI 3), raw (the
// KQ_IOC_KEVENT ioctl by hand: arrays by address), inline (the
// KQ_IOC_KEVENT_INLINE_* ioctls by hand: arrays in the argument; "—" with a
// daemon older than ABI 3), floor (the libfuse3 probe, only for the empty
// call). "ratio" compares lib (or raw for the empty call) with the baseline
// the target names.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include <sys/event.h>

#include "proto/kqueue_abi.h"

namespace {

// ---- timing ------------------------------------------------------------------

double NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

bool g_quick = false;

// Time per call of op(), in nanoseconds: the best of many short batches.
// The machine this runs on is shared (other builds, other tests, a VM's
// stolen time); interference only ever adds time, so the fastest batch of
// a couple of milliseconds is the figure that repeats from run to run,
// where a mean or median follows the neighbours' load.
double BestNs(const std::function<void()>& op) {
  const double batch_ns = 2e6;
  const int batches = g_quick ? 15 : 60;
  // Calibrate: how many calls fill a batch.
  long n = 1;
  for (;;) {
    double t0 = NowNs();
    for (long i = 0; i < n; i++) op();
    double dt = NowNs() - t0;
    if (dt > batch_ns / 4 || n > (1L << 30)) {
      n = std::max(1L, static_cast<long>(n * batch_ns / std::max(dt, 1.0)));
      break;
    }
    n *= 2;
  }
  double best = 0;
  for (int b = 0; b < batches; b++) {
    double t0 = NowNs();
    for (long i = 0; i < n; i++) op();
    double per = (NowNs() - t0) / n;
    if (b == 0 || per < best) best = per;
  }
  return best;
}

void Cleanup();

// Reports, stops the daemon and the floor server, and exits.
[[noreturn]] void Die(const char* what) {
  fprintf(stderr, "kqbench: %s: %s\n", what, strerror(errno));
  Cleanup();
  exit(1);
}

// ---- placement ---------------------------------------------------------------

// Sets the affinity of every thread of `pid` (0: this process). Threads
// created later inherit it from their creator.
void SetAffinity(pid_t pid, const cpu_set_t& set) {
  if (pid == 0) pid = getpid();
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    sched_setaffinity(atoi(e->d_name), sizeof set, &set);
  }
  closedir(d);
}

cpu_set_t OneCpu() {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(0, &s);
  return s;
}

cpu_set_t AllCpus() {
  cpu_set_t s;
  CPU_ZERO(&s);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  for (long i = 0; i < n && i < CPU_SETSIZE; i++) CPU_SET(i, &s);
  return s;
}

// ---- the private daemon --------------------------------------------------------

std::string g_dir;
std::string g_floor_path;
pid_t g_daemon = -1;  // what Cleanup() stops
pid_t g_floor = -1;

std::string DefaultDaemon(const char* argv0) {
  // bazel run: runfiles next to the binary.
  std::string self = argv0;
  for (const char* rel : {".runfiles/kqueued/daemon/kqueued", ".runfiles/__main__/daemon/kqueued"}) {
    std::string p = self + rel;
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  if (const char* d = getenv("RUNFILES_DIR")) {
    for (const char* ws : {"/kqueued", "/__main__"}) {
      std::string p = std::string(d) + ws + "/daemon/kqueued";
      if (access(p.c_str(), X_OK) == 0) return p;
    }
  }
  return "";
}

pid_t StartDaemon(const std::string& bin, const std::string& device) {
  pid_t pid = fork();
  if (pid < 0) Die("fork");
  if (pid == 0) {
    execl(bin.c_str(), bin.c_str(), "--device", device.c_str(), "--transport", "fuse",
          "--foreground", static_cast<char*>(nullptr));
    _exit(127);
  }
  g_daemon = pid;
  for (int i = 0; i < 500; i++) {
    int fd = open(device.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      kq_version v{};
      int rc = ioctl(fd, KQ_IOC_VERSION, &v);
      close(fd);
      if (rc == 0) return pid;
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      fprintf(stderr, "kqbench: %s exited during start-up\n", bin.c_str());
      g_daemon = -1;
      Cleanup();
      exit(1);
    }
    usleep(20000);
  }
  fprintf(stderr, "kqbench: the daemon did not become ready\n");
  Cleanup();
  exit(1);
}

// ---- the floor probe: a minimal libfuse3 server answering one ioctl ---------

#define FLOOR_IOC _IOWR('k', 0x7f, struct FloorArg)
struct FloorArg {
  uint64_t a, b;
};

void FloorGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  struct stat st{};
  st.st_ino = ino;
  st.st_mode = S_IFREG | 0666;
  st.st_nlink = 1;
  fuse_reply_attr(req, &st, 3600.0);
}

void FloorOpen(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  fi->direct_io = 1;
  fi->nonseekable = 1;
  fi->noflush = 1;
  fuse_reply_open(req, fi);
}

void FloorIoctl(fuse_req_t req, fuse_ino_t, unsigned int cmd, void*, fuse_file_info*,
                unsigned, const void* in, size_t in_size, size_t) {
  if (cmd != FLOOR_IOC || in_size != sizeof(FloorArg)) {
    fuse_reply_err(req, ENOTTY);
    return;
  }
  fuse_reply_ioctl(req, 0, in, in_size);
}

// Forks the server; it serves until SIGTERM.
pid_t StartFloor(const std::string& path) {
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) Die("create the floor's mount point");
  close(fd);
  pid_t pid = fork();
  if (pid < 0) Die("fork");
  if (pid == 0) {
    fuse_lowlevel_ops ops;
    memset(&ops, 0, sizeof ops);
    ops.getattr = FloorGetattr;
    ops.open = FloorOpen;
    ops.ioctl = FloorIoctl;
    char prog[] = "kqbench-floor";
    char opt1[] = "-o";
    char opt2[] = "allow_other";
    char* argv[] = {prog, opt1, opt2, nullptr};
    fuse_args args = FUSE_ARGS_INIT(3, argv);
    fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, nullptr);
    if (!se || fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, path.c_str()) != 0)
      _exit(1);
    fuse_session_loop(se);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    _exit(0);
  }
  g_floor = pid;
  for (int i = 0; i < 500; i++) {
    int f = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (f >= 0) {
      FloorArg a{1, 2};
      int rc = ioctl(f, FLOOR_IOC, &a);
      close(f);
      if (rc == 0) return pid;
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      fprintf(stderr, "kqbench: the floor server could not start\n");
      g_floor = -1;
      Cleanup();
      exit(1);
    }
    usleep(20000);
  }
  fprintf(stderr, "kqbench: the floor server did not answer\n");
  Cleanup();
  exit(1);
}

// ---- the three interfaces under test -------------------------------------------

struct Pipe {
  int r = -1, w = -1;
};

std::vector<Pipe> MakePipes(size_t n, bool ready) {
  std::vector<Pipe> v(n);
  for (auto& p : v) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) Die("pipe2 (raise the fd limit?)");
    p.r = fds[0];
    p.w = fds[1];
    if (ready && write(p.w, "x", 1) != 1) Die("write");
  }
  return v;
}

void ClosePipes(std::vector<Pipe>* v) {
  for (auto& p : *v) {
    close(p.r);
    close(p.w);
  }
  v->clear();
}

int RawKevent(int kq, const struct kevent* ch, size_t nch, struct kevent* ev, size_t nev,
              const timespec* ts) {
  kq_kevent_args a{};
  a.changelist = reinterpret_cast<uint64_t>(ch);
  a.nchanges = nch;
  a.eventlist = reinterpret_cast<uint64_t>(ev);
  a.nevents = nev;
  if (ts) {
    a.flags = KQ_KEVENT_TIMEOUT;
    a.timeout_sec = ts->tv_sec;
    a.timeout_nsec = ts->tv_nsec;
  }
  return ioctl(kq, KQ_IOC_KEVENT, &a);
}

// KQ_IOC_KEVENT_INLINE_* by hand: the smallest capacity that holds the
// call, changes copied in and events out of one buffer per thread.
int InlineKevent(int kq, const struct kevent* ch, size_t nch, struct kevent* ev, size_t nev,
                 const timespec* ts) {
  struct Arg {
    kq_kevent_inline head;
    struct kevent ev[KQ_KEVENT_INLINE_MAX];
  };
  static thread_local Arg a;
  const size_t n = std::max(nch, nev);
  unsigned long cmd = n <= 1    ? KQ_IOC_KEVENT_INLINE_1
                      : n <= 8  ? KQ_IOC_KEVENT_INLINE_8
                      : n <= 64 ? KQ_IOC_KEVENT_INLINE_64
                                : KQ_IOC_KEVENT_INLINE_408;
  if (n > KQ_KEVENT_INLINE_MAX) {
    errno = E2BIG;
    return -1;
  }
  a.head = kq_kevent_inline{};
  a.head.nchanges = static_cast<uint32_t>(nch);
  a.head.nevents = static_cast<uint32_t>(nev);
  if (ts) {
    a.head.flags = KQ_KEVENT_TIMEOUT;
    a.head.timeout_sec = ts->tv_sec;
    a.head.timeout_nsec = ts->tv_nsec;
  }
  if (nch > 0) memcpy(a.ev, ch, nch * sizeof(struct kevent));
  int rc = ioctl(kq, cmd, &a);
  if (rc > 0 && ev != nullptr) memcpy(ev, a.ev, rc * sizeof(struct kevent));
  return rc;
}

// Whether the daemon serves the inline commands (ABI 3); set at start.
bool g_inline = false;

using KeventFn = int (*)(int, const struct kevent*, size_t, struct kevent*, size_t,
                         const timespec*);

// The kevent forms measured in the kqueued columns: lib, raw, inline, and
// lib on a queue without the fast path ("lib ioctl").
constexpr int kForms = 4;
constexpr int kLibIoctl = 3;

int LibKevent(int kq, const struct kevent* ch, size_t nch, struct kevent* ev, size_t nev,
              const timespec* ts) {
  return kevent(kq, ch, nch, ev, nev, ts);
}

const timespec kZero = {0, 0};

void KqAdd(KeventFn fn, int kq, int fd, uint16_t flags = EV_ADD) {
  struct kevent ch;
  EV_SET(&ch, fd, EVFILT_READ, flags, 0, 0, 0);
  if (fn(kq, &ch, 1, nullptr, 0, nullptr) != 0) Die("kevent EV_ADD");
}

// A queue for form `which`: only "lib" has the library's fast path (the
// others are made with KQUEUE_LOCAL=0, read by each kqueue()).
int NewKq(int which = kLibIoctl) {
  if (which != 0) setenv("KQUEUE_LOCAL", "0", 1);
  int kq = kqueue();
  if (which != 0) unsetenv("KQUEUE_LOCAL");
  if (kq < 0) Die("kqueue()");
  return kq;
}

// ---- figures ---------------------------------------------------------------------

// Zero-timeout harvest of 1 ready pipe, with `idle` more pipes registered
// that are not ready. Nanoseconds per call.
struct Harvest {
  double epoll = 0, lib = 0, raw = 0, inl = 0, libio = 0;
  // The figure of form `which` (0 lib, 1 raw, 2 inline, 3 lib ioctl).
  double& of(int which) {
    return which == 0 ? lib : which == 1 ? raw : which == 2 ? inl : libio;
  }
};

KeventFn FormFn(int which) {
  return which == 0 || which == kLibIoctl ? LibKevent : which == 1 ? RawKevent : InlineKevent;
}

// Whether form `which` can be measured against this daemon.
bool FormServed(int which) { return which != 2 || g_inline; }

Harvest HarvestOne(const std::vector<Pipe>& idle_pool, size_t idle) {
  Harvest h;
  std::vector<Pipe> ready = MakePipes(1, true);
  const std::vector<Pipe> quiet(idle_pool.begin(), idle_pool.begin() + idle);
  {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ee{};
    ee.events = EPOLLIN;
    for (auto& p : quiet) epoll_ctl(ep, EPOLL_CTL_ADD, p.r, &ee);
    epoll_ctl(ep, EPOLL_CTL_ADD, ready[0].r, &ee);
    h.epoll = BestNs([&] {
      epoll_event out;
      if (epoll_wait(ep, &out, 1, 0) != 1) Die("epoll_wait");
    });
    close(ep);
  }
  for (int which = 0; which < kForms; which++) {
    if (!FormServed(which)) continue;
    KeventFn fn = FormFn(which);
    int kq = NewKq(which);
    for (auto& p : quiet) KqAdd(fn, kq, p.r);
    KqAdd(fn, kq, ready[0].r);
    double ns = BestNs([&] {
      struct kevent out;
      if (fn(kq, nullptr, 0, &out, 1, &kZero) != 1) Die("kevent harvest");
    });
    h.of(which) = ns;
    close(kq);
  }
  ClosePipes(&ready);
  return h;
}

// 1000 ready pipes harvested 256 per call: events per second.
Harvest Batch(const std::vector<Pipe>& pool) {
  Harvest h;
  // The first 1000 of the pool, made ready for the time of the figure.
  const std::vector<Pipe> pipes(pool.begin(), pool.begin() + std::min<size_t>(1000, pool.size()));
  for (auto& p : pipes) {
    if (write(p.w, "x", 1) != 1) Die("write");
  }
  {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ee{};
    ee.events = EPOLLIN;
    for (auto& p : pipes) epoll_ctl(ep, EPOLL_CTL_ADD, p.r, &ee);
    std::vector<epoll_event> out(256);
    double ns = BestNs([&] {
      if (epoll_wait(ep, out.data(), 256, 0) != 256) Die("epoll_wait batch");
    });
    h.epoll = 256e9 / ns;
    close(ep);
  }
  for (int which = 0; which < kForms; which++) {
    if (!FormServed(which)) continue;
    KeventFn fn = FormFn(which);
    int kq = NewKq(which);
    for (auto& p : pipes) KqAdd(fn, kq, p.r);
    std::vector<struct kevent> out(256);
    double ns = BestNs([&] {
      if (fn(kq, nullptr, 0, out.data(), 256, &kZero) != 256) Die("kevent batch");
    });
    h.of(which) = 256e9 / ns;
    close(kq);
  }
  for (auto& p : pipes) {
    char c;
    if (read(p.r, &c, 1) != 1) Die("read");
  }
  return h;
}

// Wake-up round trip: thread A writes pipe 1 and waits on pipe 2; thread B
// waits on pipe 1, reads it and writes pipe 2. Nanoseconds per round trip.
Harvest WakeUp() {
  Harvest h;
  for (int which = 0; which < 1 + kForms; which++) {
    if (which > 0 && !FormServed(which - 1)) continue;
    std::vector<Pipe> p = MakePipes(2, false);
    std::atomic<bool> stop{false};
    // Each side: a blocking wait for its read end, then read the byte.
    std::function<int()> make_waiter;
    auto run = [&](std::function<void(int)> wait_on) {
      std::thread b([&] {
        char c;
        for (;;) {
          wait_on(1);
          if (stop.load()) return;
          if (read(p[0].r, &c, 1) != 1) Die("read b");
          if (write(p[1].w, "y", 1) != 1) Die("write b");
        }
      });
      double ns = BestNs([&] {
        char c;
        if (write(p[0].w, "x", 1) != 1) Die("write a");
        wait_on(0);
        if (read(p[1].r, &c, 1) != 1) Die("read a");
      });
      stop = true;
      if (write(p[0].w, "z", 1) != 1) Die("write stop");
      b.join();
      return ns;
    };
    if (which == 0) {
      int ep[2];
      for (int i = 0; i < 2; i++) {
        ep[i] = epoll_create1(EPOLL_CLOEXEC);
        epoll_event ee{};
        ee.events = EPOLLIN;
        // A (index 0) waits on pipe 2's read end, B (1) on pipe 1's.
        epoll_ctl(ep[i], EPOLL_CTL_ADD, i == 0 ? p[1].r : p[0].r, &ee);
      }
      h.epoll = run([&](int who) {
        epoll_event out;
        while (epoll_wait(ep[who], &out, 1, -1) != 1) {
        }
      });
      close(ep[0]);
      close(ep[1]);
    } else {
      KeventFn fn = FormFn(which - 1);
      int kq[2];
      for (int i = 0; i < 2; i++) {
        kq[i] = NewKq(which - 1);
        KqAdd(fn, kq[i], i == 0 ? p[1].r : p[0].r);
      }
      double ns = run([&](int who) {
        struct kevent out;
        while (fn(kq[who], nullptr, 0, &out, 1, nullptr) != 1) {
        }
      });
      h.of(which - 1) = ns;
      close(kq[0]);
      close(kq[1]);
    }
    ClosePipes(&p);
  }
  return h;
}

// EV_ADD then EV_DELETE of each of 9000 pipes, one change per call: pairs/s.
Harvest AddDelete(std::vector<Pipe>& pipes) {
  Harvest h;
  size_t i = 0;
  {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    double ns = BestNs([&] {
      epoll_event ee{};
      ee.events = EPOLLIN;
      int fd = pipes[i++ % pipes.size()].r;
      if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ee) != 0) Die("epoll_ctl add");
      if (epoll_ctl(ep, EPOLL_CTL_DEL, fd, &ee) != 0) Die("epoll_ctl del");
    });
    h.epoll = 1e9 / ns;
    close(ep);
  }
  for (int which = 0; which < kForms; which++) {
    if (!FormServed(which)) continue;
    KeventFn fn = FormFn(which);
    int kq = NewKq(which);
    double ns = BestNs([&] {
      int fd = pipes[i++ % pipes.size()].r;
      KqAdd(fn, kq, fd, EV_ADD);
      KqAdd(fn, kq, fd, EV_DELETE);
    });
    h.of(which) = 1e9 / ns;
    close(kq);
  }
  return h;
}

struct Empty {
  double raw = 0, inl = 0, floor = 0;
};

Empty EmptyCall(const std::string& floor_path) {
  Empty e;
  int kq = NewKq();
  e.raw = BestNs([&] {
    if (RawKevent(kq, nullptr, 0, nullptr, 0, &kZero) != 0) Die("empty kevent");
  });
  if (g_inline) {
    e.inl = BestNs([&] {
      if (InlineKevent(kq, nullptr, 0, nullptr, 0, &kZero) != 0) Die("empty inline kevent");
    });
  }
  close(kq);
  int f = open(floor_path.c_str(), O_RDWR | O_CLOEXEC);
  if (f < 0) Die("open the floor probe");
  e.floor = BestNs([&] {
    FloorArg a{1, 2};
    if (ioctl(f, FLOOR_IOC, &a) != 0) Die("floor ioctl");
  });
  close(f);
  return e;
}

// ---- the report ------------------------------------------------------------------

void Row(const char* name, const char* unit, double epoll, double lib, double libio,
         double raw, double inl, double ratio, const char* target, bool met) {
  auto num = [](double v, char* buf, size_t n) {
    if (v <= 0) snprintf(buf, n, "—");
    else if (v >= 1e6) snprintf(buf, n, "%.2f M", v / 1e6);
    else if (v >= 1e4) snprintf(buf, n, "%.1f k", v / 1e3);
    else snprintf(buf, n, "%.2f", v);
  };
  char a[32], b[32], c[32], d[32], e[32];
  num(epoll, a, sizeof a);
  num(lib, b, sizeof b);
  num(libio, e, sizeof e);
  num(raw, c, sizeof c);
  num(inl, d, sizeof d);
  char r[32];
  if (ratio > 0) snprintf(r, sizeof r, "%.3g", ratio);
  else snprintf(r, sizeof r, "—");
  printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, unit, a, b, e, c, d, r,
         target,
         target[0] == '-' || strcmp(target, "—") == 0 ? "" : (met ? "met" : "MISSED"));
}

void RunAll(const char* placement, const std::string& floor_path, std::vector<Pipe>& many) {
  printf("\n### %s\n\n", placement);
  printf("| figure | unit | epoll | lib | lib ioctl | raw | inline | ratio | target | |\n");
  printf("|---|---|---|---|---|---|---|---|---|---|\n");
  fflush(stdout);
  Harvest h1 = HarvestOne(many, 0);
  Row("zero-timeout harvest of 1 ready pipe", "µs/call", h1.epoll / 1e3, h1.lib / 1e3,
      h1.libio / 1e3, h1.raw / 1e3, h1.inl / 1e3, h1.lib / h1.epoll, "lib ≤ 2× epoll", h1.lib <= 2 * h1.epoll);
  fflush(stdout);
  Harvest b = Batch(many);
  Row("batch: 1000 ready pipes, 256 per call", "events/s", b.epoll, b.lib, b.libio, b.raw, b.inl,
      b.lib / b.epoll, "lib ≥ 1/8 epoll", b.lib * 8 >= b.epoll);
  fflush(stdout);
  Harvest w = WakeUp();
  Row("wake-up round trip, two threads parked on pipes", "µs", w.epoll / 1e3, w.lib / 1e3,
      w.libio / 1e3, w.raw / 1e3, w.inl / 1e3, w.lib / w.epoll, "lib ≤ 2× epoll", w.lib <= 2 * w.epoll);
  fflush(stdout);
  Harvest ad = AddDelete(many);
  Row("EV_ADD+EV_DELETE of 9000 pipes, one change per call", "pairs/s", ad.epoll, ad.lib,
      ad.libio, ad.raw, ad.inl, ad.lib / ad.epoll, "lib ≥ 1/10 epoll", ad.lib * 10 >= ad.epoll);
  fflush(stdout);
  // Idle knotes: harvest 1 ready pipe beside 9000 idle ones vs 100.
  Harvest i100 = HarvestOne(many, 100);
  Harvest i9000 = HarvestOne(many, many.size());
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0; };
  Row("harvest 1 ready beside 100 idle", "µs/call", i100.epoll / 1e3, i100.lib / 1e3,
      i100.libio / 1e3, i100.raw / 1e3, i100.inl / 1e3, 0, "—", true);
  Row("harvest 1 ready beside 9000 idle", "µs/call", i9000.epoll / 1e3, i9000.lib / 1e3,
      i9000.libio / 1e3, i9000.raw / 1e3, i9000.inl / 1e3, ratio(i9000.lib, i100.lib), "lib 9000/100 ≤ 1.1",
      i9000.lib <= 1.1 * i100.lib);
  printf("| (idle ratio 9000/100) | × | %.3g | %.3g | %.3g | %.3g | %.3g | | | |\n",
         ratio(i9000.epoll, i100.epoll), ratio(i9000.lib, i100.lib),
         ratio(i9000.libio, i100.libio),
         ratio(i9000.raw, i100.raw), ratio(i9000.inl, i100.inl));
  fflush(stdout);
  Empty e = EmptyCall(floor_path);
  char inl[32] = "—";
  if (e.inl > 0) snprintf(inl, sizeof inl, "%.2f", e.inl / 1e3);
  printf("| raw empty KQ_IOC_KEVENT vs the FUSE floor probe | µs/call | floor %.2f | — | — | %.2f "
         "| %s | %.3g | raw ≤ 1.3× floor | %s |\n",
         e.floor / 1e3, e.raw / 1e3, inl, e.raw / e.floor,
         e.raw <= 1.3 * e.floor ? "met" : "MISSED");
  fflush(stdout);
}

void Cleanup() {
  if (g_daemon > 0) {
    kill(g_daemon, SIGTERM);
    waitpid(g_daemon, nullptr, 0);
    g_daemon = -1;
  }
  if (g_floor > 0) {
    kill(g_floor, SIGTERM);
    waitpid(g_floor, nullptr, 0);
    umount2(g_floor_path.c_str(), MNT_DETACH);
    g_floor = -1;
  }
  if (!g_dir.empty()) {
    unlink(g_floor_path.c_str());
    rmdir(g_dir.c_str());
    g_dir.clear();
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string daemon_bin = DefaultDaemon(argv[0]);
  bool pinned_only = false, unpinned_only = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--daemon" && i + 1 < argc) {
      daemon_bin = argv[++i];
    } else if (a == "--quick") {
      g_quick = true;
    } else if (a == "--pinned-only") {
      pinned_only = true;
    } else if (a == "--unpinned-only") {
      unpinned_only = true;
    } else {
      fprintf(stderr,
              "usage: kqbench [--daemon PATH] [--quick] [--pinned-only|--unpinned-only]\n");
      return 2;
    }
  }
  if (daemon_bin.empty()) {
    fprintf(stderr, "kqbench: no kqueued found in the runfiles: pass --daemon PATH\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  char tmpl[] = "/tmp/kqbench-XXXXXX";
  if (!mkdtemp(tmpl)) Die("mkdtemp");
  g_dir = tmpl;
  const std::string device = g_dir + "/kqueue";
  const std::string floor_path = g_dir + "/floor";
  g_floor_path = floor_path;
  const pid_t daemon = g_daemon = StartDaemon(daemon_bin, device);
  setenv(KQ_DEVICE_ENV, device.c_str(), 1);
  const pid_t floor = g_floor = StartFloor(floor_path);

  // 9000 pipes for the add/delete and idle figures (18000 descriptors).
  const size_t kMany = 9000;
  size_t many_n = kMany;
  if (rl.rlim_cur < 2 * kMany + 300) {
    many_n = rl.rlim_cur > 700 ? (rl.rlim_cur - 300) / 2 : 200;
    fprintf(stderr, "kqbench: fd limit %llu: %zu pipes instead of 9000\n",
            static_cast<unsigned long long>(rl.rlim_cur), many_n);
  }
  std::vector<Pipe> many = MakePipes(many_n, false);

  {
    // Does this daemon serve the inline commands (ABI 3)?
    int kq = NewKq();
    g_inline = InlineKevent(kq, nullptr, 0, nullptr, 0, &kZero) == 0;
    close(kq);
  }
  printf("# kqbench: %s, %ld CPUs, daemon %s (%s)\n", g_quick ? "quick" : "full",
         sysconf(_SC_NPROCESSORS_ONLN), daemon_bin.c_str(),
         g_inline ? "inline kevent served" : "no inline kevent: lib uses KQ_IOC_KEVENT");
  if (!unpinned_only) {
    cpu_set_t one = OneCpu();
    SetAffinity(0, one);
    SetAffinity(daemon, one);
    SetAffinity(floor, one);
    RunAll("pinned: client, daemon and floor server on CPU 0", floor_path, many);
  }
  if (!pinned_only) {
    cpu_set_t all = AllCpus();
    SetAffinity(0, all);
    SetAffinity(daemon, all);
    SetAffinity(floor, all);
    RunAll("unpinned", floor_path, many);
  }
  ClosePipes(&many);
  Cleanup();
  return 0;
}
