#include "daemon/transport/session_loop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "daemon/transport/fuse_api.h"

namespace kqd {

namespace {

// A serving thread retires after a request when at least this many others
// sit idle (and more than min_threads are alive): enough spares for a burst,
// few enough that an idle daemon does not keep a crowd of threads.
constexpr int kIdleSpares = 3;
// ...but never within this long of the last start of a thread, so a steady
// load that keeps the pool near its size does not create and retire
// threads over and over.
constexpr int64_t kRetireAfterSpawnNs = 1000000000;

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Set on serving threads: which loop they serve (Stop() from one of them
// would wait for itself).
thread_local const SessionLoop* tls_serving = nullptr;

std::string ErrnoText(const char* what, int err) {
  return std::string(what) + ": " + strerror(err);
}

// Does nothing: its only purpose is that a blocked read() returns EINTR.
void OnWakeSignal(int) {}

void InstallWakeHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = OnWakeSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: the read() must fail with EINTR
    sigaction(SessionLoop::WakeSignal(), &sa, nullptr);
  });
}

// Every signal blocked except the wake signal.
sigset_t ServingMask() {
  sigset_t set;
  sigfillset(&set);
  sigdelset(&set, SessionLoop::WakeSignal());
  return set;
}

}  // namespace

int SessionLoop::WakeSignal() { return SIGRTMIN + 3; }

std::unique_ptr<SessionLoop> SessionLoop::Create(std::string* error,
                                                 SessionLoopOptions options) {
  ScopedFd task_fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!task_fd.valid()) {
    *error = ErrnoText("eventfd", errno);
    return nullptr;
  }
  if (options.min_threads < 1) options.min_threads = 1;
  if (options.max_threads < options.min_threads) options.max_threads = options.min_threads;
  return std::unique_ptr<SessionLoop>(new SessionLoop(std::move(task_fd), options));
}

SessionLoop::SessionLoop(ScopedFd task_fd, SessionLoopOptions options)
    : options_(options), task_fd_(std::move(task_fd)) {}

SessionLoop::~SessionLoop() {
  Stop();
  CloseSession();
}

bool SessionLoop::Start(fuse_session* se, std::string* error) {
  session_ = se;
  std::unique_lock<std::mutex> lock(mu_);
  started_ = true;
  int fd = fuse_session_fd(se);
  int flags = fcntl(fd, F_GETFL);
  // Blocking: the kernel then wakes one waiting reader per request (an
  // exclusive wait), where poll() would wake every idle thread.
  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    *error = ErrnoText("fcntl(~O_NONBLOCK) on the FUSE fd", errno);
    connection_ended_ = true;
    return false;
  }
  InstallWakeHandler();
  for (int i = 0; i < options_.min_threads; i++) SpawnLocked();
  sigset_t all;
  sigset_t old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  task_thread_ = std::thread([this] { RunTaskThread(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return true;
}

void SessionLoop::SpawnLocked() {
  const uint64_t id = next_thread_id_++;
  // The thread starts with the serving mask (inherited), so there is no
  // window in which it could take a process-directed signal.
  sigset_t mask = ServingMask();
  sigset_t old;
  pthread_sigmask(SIG_SETMASK, &mask, &old);
  std::thread t([this, id] { Serve(id); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  live_[id] = t.native_handle();
  t.detach();
  last_spawn_ns_.store(MonotonicNs(), std::memory_order_relaxed);
}

void SessionLoop::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
    tasks_queued_.store(true, std::memory_order_release);
  }
  // The task thread takes it, unless a serving thread gets there first
  // (each looks after every request). Always woken: the poster may be a
  // serving thread about to spend long on a uid's queued requests. Tasks
  // are rare (interrupts), the write is cheap.
  uint64_t one = 1;
  ssize_t n = write(task_fd_.get(), &one, sizeof(one));
  (void)n;  // EAGAIN: the counter is huge, a wake-up is pending anyway
}

void SessionLoop::MarkReady() {
  std::lock_guard<std::mutex> lock(mu_);
  ready_ = true;
  state_changed_.notify_all();
}

bool SessionLoop::WaitReady(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  state_changed_.wait_for(lock, timeout,
                          [this] { return ready_ || connection_ended_ || live_.empty(); });
  return ready_ && !connection_ended_ && !live_.empty();
}

bool SessionLoop::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return started_ && !connection_ended_ && !live_.empty();
}

int SessionLoop::threads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(live_.size());
}

void SessionLoop::Stop() {
  if (tls_serving == this) {
    // A handler callback asked to stop its own transport: waiting would
    // deadlock. This is a programming error, not a runtime condition.
    fprintf(stderr, "kqueued: transport stopped from its own serving thread\n");
    abort();
  }
  stop_requested_.store(true);
  if (task_thread_.joinable()) {
    uint64_t one = 1;
    ssize_t n = write(task_fd_.get(), &one, sizeof(one));
    (void)n;
    task_thread_.join();
  }
  std::unique_lock<std::mutex> lock(mu_);
  // A thread may be between its stop check and read() when the signal
  // arrives (the handler runs, read() then blocks): signal again until every
  // thread is gone. A thread busy with a request leaves after it.
  while (!live_.empty()) {
    for (const auto& entry : live_) pthread_kill(entry.second, WakeSignal());
    state_changed_.wait_for(lock, std::chrono::milliseconds(10));
  }
  tasks_.clear();
  tasks_queued_.store(false);
}

void SessionLoop::CloseSession() {
  if (session_ == nullptr) return;
  // fuse_session_destroy closes the fd; nothing else owns it.
  fuse_session_destroy(session_);
  session_ = nullptr;
}

void SessionLoop::RunTasks() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks.swap(tasks_);
    tasks_queued_.store(false, std::memory_order_relaxed);
  }
  // Outside the lock: a task may Post() again.
  for (auto& task : tasks) task();
}

void SessionLoop::RunTaskThread() {
  struct pollfd pfd;
  pfd.fd = task_fd_.get();
  pfd.events = POLLIN;
  while (!stopping()) {
    if (poll(&pfd, 1, -1) < 0 && errno != EINTR) {
      fprintf(stderr, "kqueued: transport task poll: %s\n", strerror(errno));
      return;
    }
    uint64_t count;
    ssize_t n = read(task_fd_.get(), &count, sizeof(count));
    (void)n;
    if (stopping()) return;
    RunTasks();
  }
}

bool SessionLoop::ShouldRetire() {
  if (idle_.load(std::memory_order_relaxed) < kIdleSpares) return false;
  if (MonotonicNs() - last_spawn_ns_.load(std::memory_order_relaxed) < kRetireAfterSpawnNs)
    return false;
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(live_.size()) > options_.min_threads;
}

void SessionLoop::Serve(uint64_t id) {
  tls_serving = this;
  struct fuse_buf buf;
  memset(&buf, 0, sizeof(buf));  // libfuse allocates buf.mem on first use
  bool connection_ended = false;
  bool retiring = false;
  while (!stopping()) {
    if (tasks_queued_.load(std::memory_order_acquire)) RunTasks();
    idle_.fetch_add(1, std::memory_order_relaxed);
    int res = fuse_session_receive_buf(session_, &buf);
    const int idle_before = idle_.fetch_sub(1, std::memory_order_relaxed);
    if (res == -EINTR || res == -EAGAIN) continue;  // woken (Stop) or withdrawn
    if (res == 0 || fuse_session_exited(session_)) {
      connection_ended = true;
      break;
    }
    if (res < 0) {
      // Short reads (EIO) and allocation failures concern one request;
      // anything else means the fd is unusable.
      if (res == -EIO || res == -ENOMEM) continue;
      fprintf(stderr, "kqueued: reading the FUSE connection: %s\n", strerror(-res));
      connection_ended = true;
      break;
    }
    if (idle_before <= 1) {
      // This request took the last idle thread: start another, so a request
      // that takes long (or blocks on a slow page) never leaves the
      // connection unread.
      std::lock_guard<std::mutex> lock(mu_);
      if (static_cast<int>(live_.size()) < options_.max_threads && !stopping()) SpawnLocked();
    }
    fuse_session_process_buf(session_, &buf);
    // Interrupt callbacks queued while processing run before the next
    // request, never inside a libfuse call.
    if (tasks_queued_.load(std::memory_order_acquire)) RunTasks();
    if (ShouldRetire()) {
      retiring = true;
      break;
    }
  }
  free(buf.mem);
  tls_serving = nullptr;

  std::lock_guard<std::mutex> lock(mu_);
  if (retiring && static_cast<int>(live_.size()) <= options_.min_threads && !stopping() &&
      !connection_ended) {
    // Others retired meanwhile: stay after all. Rare; re-enter the loop on
    // a fresh thread rather than here, keeping this function's shape.
    SpawnLocked();
  }
  if (connection_ended) connection_ended_ = true;
  live_.erase(id);
  state_changed_.notify_all();
  // Nothing of *this may be touched after the lock is released: Stop() may
  // return and the loop be destroyed at once.
}

}  // namespace kqd
