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

// The watchdog's period: a request that has kept every serving thread busy
// (and nobody reading the connection) for one to two periods gets a spare
// thread promoted to reader.
constexpr int kWatchdogPeriodMs = 20;
// A spare that has not been needed for this long retires (above
// min_threads): threads added for a burst are gone soon after it.
constexpr std::chrono::milliseconds kSpareIdle(300);
// Periods with no request started (and every thread busy, nobody reading)
// before a spare is promoted: one is too few on a loaded machine, where a
// reader merely descheduled for a period looks stuck.
constexpr int kStuckPeriods = 2;

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
  UniqueMutexLock lock(mu_);
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
}

void SessionLoop::Post(std::function<void()> task) {
  {
    MutexLock lock(mu_);
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
  MutexLock lock(mu_);
  ready_ = true;
  state_changed_.notify_all();
}

bool SessionLoop::WaitReady(std::chrono::milliseconds timeout) {
  UniqueMutexLock lock(mu_);
  state_changed_.wait_for(lock.native(), timeout, [this]() REQUIRES(mu_) {
    return ready_ || connection_ended_ || live_.empty();
  });
  return ready_ && !connection_ended_ && !live_.empty();
}

bool SessionLoop::running() const {
  MutexLock lock(mu_);
  return started_ && !connection_ended_ && !live_.empty();
}

int SessionLoop::threads() const {
  MutexLock lock(mu_);
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
  UniqueMutexLock lock(mu_);
  // A thread may be between its stop check and read() when the signal
  // arrives (the handler runs, read() then blocks): signal again until every
  // thread is gone. A thread busy with a request leaves after it.
  while (!live_.empty()) {
    spare_cv_.notify_all();
    for (const auto& entry : live_) pthread_kill(entry.second, WakeSignal());
    state_changed_.wait_for(lock.native(), std::chrono::milliseconds(10));
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
    MutexLock lock(mu_);
    tasks.swap(tasks_);
    tasks_queued_.store(false, std::memory_order_relaxed);
  }
  // Outside the lock: a task may Post() again.
  for (auto& task : tasks) task();
}

void SessionLoop::WakeWatchdogIfAsleep() {
  // Pairs with RunTaskThread: either it sees the new epoch before sleeping
  // for good, or we see it asleep here (both sequentially consistent).
  if (!watchdog_asleep_.load()) return;
  watchdog_asleep_.store(false);
  uint64_t one = 1;
  ssize_t n = write(task_fd_.get(), &one, sizeof(one));
  (void)n;
}

void SessionLoop::RunTaskThread() {
  struct pollfd pfd;
  pfd.fd = task_fd_.get();
  pfd.events = POLLIN;
  uint64_t last_epoch = epoch_.load();
  int stuck_periods = 0;
  bool deep = false;
  while (!stopping()) {
    if (poll(&pfd, 1, deep ? -1 : kWatchdogPeriodMs) < 0 && errno != EINTR) {
      fprintf(stderr, "kqueued: transport task poll: %s\n", strerror(errno));
      return;
    }
    if (pfd.revents != 0) {
      uint64_t count;
      ssize_t n = read(task_fd_.get(), &count, sizeof(count));
      (void)n;
    }
    if (stopping()) return;
    if (tasks_queued_.load(std::memory_order_acquire)) RunTasks();
    const uint64_t epoch = epoch_.load();
    {
      MutexLock lock(mu_);
      // No request has started for a whole period, nobody reads the
      // connection, and threads are busy: they are stuck on requests (a
      // huge changelist, a slow page). Let one more thread read.
      const bool stuck = busy_ > 0 && readers_ == 0 && promotions_ == 0 && epoch == last_epoch;
      stuck_periods = stuck ? stuck_periods + 1 : 0;
      if (stuck && stuck_periods >= kStuckPeriods) {
        stuck_periods = 0;
        promotions_++;
        if (spares_ > 0) {
          spare_cv_.notify_one();
        } else if (static_cast<int>(live_.size()) < options_.max_threads) {
          SpawnLocked();
        } else {
          promotions_--;  // at the cap: the busy threads must finish first
        }
      }
      deep = busy_ == 0 && epoch == last_epoch;
    }
    last_epoch = epoch;
    if (deep) {
      // Idle for a whole period: sleep until a request starts.
      watchdog_asleep_.store(true);
      if (epoch_.load() != epoch) {
        watchdog_asleep_.store(false);
        deep = false;
      }
    }
  }
}

void SessionLoop::Serve(uint64_t id) {
  tls_serving = this;
  struct fuse_buf buf;
  memset(&buf, 0, sizeof(buf));  // libfuse allocates buf.mem on first use
  bool connection_ended = false;
  UniqueMutexLock lock(mu_);
  while (!stopping() && !connection_ended_) {
    if (readers_ > 0 && promotions_ == 0) {
      // Someone reads the connection already: wait as a spare, so that one
      // thread (the one most recently used) serves a steady stream of small
      // requests, as fast as a single-threaded loop.
      spares_++;
      const bool woken = spare_cv_.wait_for(lock.native(), kSpareIdle, [this]() REQUIRES(mu_) {
        return stopping() || connection_ended_ || promotions_ > 0 || readers_ == 0;
      });
      spares_--;
      if (!woken && static_cast<int>(live_.size()) > options_.min_threads) break;  // retire
      continue;
    }
    if (promotions_ > 0) promotions_--;
    readers_++;
    lock.unlock();
    if (tasks_queued_.load(std::memory_order_acquire)) RunTasks();
    int res = fuse_session_receive_buf(session_, &buf);
    lock.lock();
    readers_--;
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
    busy_++;
    lock.unlock();
    epoch_.fetch_add(1);
    WakeWatchdogIfAsleep();
    fuse_session_process_buf(session_, &buf);
    // Interrupt callbacks queued while processing run before the next
    // request, never inside a libfuse call.
    if (tasks_queued_.load(std::memory_order_acquire)) RunTasks();
    lock.lock();
    busy_--;
  }
  free(buf.mem);
  tls_serving = nullptr;
  if (connection_ended) connection_ended_ = true;
  live_.erase(id);
  // Whoever is left: take over reading (readers_ may be 0), or leave too.
  spare_cv_.notify_all();
  state_changed_.notify_all();
  // Nothing of *this may be touched once the lock is released: Stop() may
  // return and the loop be destroyed at once.
}

}  // namespace kqd
