// The threads that read a FUSE/CUSE connection.
//
// One serving thread at a time blocks in read() on the connection; it reads
// a request, dispatches it and writes the reply itself, then reads again —
// a steady stream of small requests is served by one thread, with no hop
// between threads and no alternation between threads (which, across vCPUs,
// would cost a cross-CPU wake-up per request). The other serving threads
// wait as spares. A watchdog (the task thread) looks every 20 ms: when
// requests have kept every serving thread busy for two periods and nobody
// is reading, it promotes a spare (or starts a thread, up to max_threads)
// to read, so a request that takes long — a huge changelist, a caller page
// on a slow filesystem — holds only its own thread and everyone else is
// served within a few tens of milliseconds. A thread that finishes while
// another reads becomes a spare; spares unused for 300 ms retire down to
// min_threads. The watchdog sleeps while the daemon is idle.
//
// Tasks posted from any thread (interrupt callbacks) run on the task thread
// or on a serving thread between two requests, whichever comes first —
// never inside a libfuse call.
//
// Signals: serving threads block every signal except WakeSignal(), whose
// handler does nothing and is installed without SA_RESTART, so Stop() can
// break a blocked read() (pthread_kill). Process-directed signals go to the
// application's own threads.
#ifndef KQUEUED_DAEMON_TRANSPORT_SESSION_LOOP_H_
#define KQUEUED_DAEMON_TRANSPORT_SESSION_LOOP_H_

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

struct fuse_session;

namespace kqd {

struct SessionLoopOptions {
  // Serving threads kept even when idle (at least 1).
  int min_threads = 2;
  // Upper bound on serving threads (>= min_threads).
  int max_threads = 64;
};

class SessionLoop {
 public:
  // The signal Stop() sends to serving threads blocked in read(). A
  // real-time signal no libc or library in the daemon uses.
  static int WakeSignal();

  // Creates the task eventfd; null (with *error) if that fails.
  static std::unique_ptr<SessionLoop> Create(std::string* error,
                                             SessionLoopOptions options = {});

  // Stop(), then CloseSession().
  ~SessionLoop();

  SessionLoop(const SessionLoop&) = delete;
  SessionLoop& operator=(const SessionLoop&) = delete;

  // Takes ownership of `se` (also on failure), whose fd is already connected
  // to the kernel (a mounted /dev/fuse or an opened /dev/cuse), makes the fd
  // blocking, installs the kWakeSignal handler and starts min_threads
  // serving threads and the task thread. Call once.
  bool Start(fuse_session* se, std::string* error) EXCLUDES(mu_);

  // Runs `task` soon on a serving thread or the task thread. Thread-safe.
  // Tasks still queued when the loop stops are dropped without running.
  void Post(std::function<void()> task) EXCLUDES(mu_);

  // Called on a serving thread once the kernel's INIT has been answered.
  void MarkReady() EXCLUDES(mu_);

  // Waits until MarkReady() was called, the loop ended, or `timeout` passed.
  // True only if ready and still running.
  bool WaitReady(std::chrono::milliseconds timeout) EXCLUDES(mu_);

  // False once the serving threads have ended (Stop(), or the kernel closed
  // the connection, e.g. an administrator unmounted the file).
  bool running() const EXCLUDES(mu_);

  // True from the moment Stop() is called: a handler working through a long
  // request should give up at its next checkpoint. Thread-safe, lock-free.
  bool stopping() const { return stop_requested_.load(std::memory_order_relaxed); }

  // Serving threads alive now (for tests and statistics).
  int threads() const EXCLUDES(mu_);

  // Stops and joins every thread: no request is read afterwards. A thread
  // busy with a request finishes it first (handlers check stopping()). Must
  // not be called from a serving thread. Idempotent.
  void Stop() EXCLUDES(mu_);

  // Destroys the session after Stop(), closing its fd: the kernel aborts
  // whatever is still on the connection (a CUSE device node disappears,
  // a FUSE mount left in place would answer ENOTCONN). Idempotent.
  void CloseSession();

 private:
  SessionLoop(ScopedFd task_fd, SessionLoopOptions options);

  // One serving thread's body.
  void Serve(uint64_t id) EXCLUDES(mu_);
  // The task thread's body.
  void RunTaskThread() EXCLUDES(mu_);
  // Runs the tasks queued so far.
  void RunTasks() EXCLUDES(mu_);
  // Starts one more serving thread. Call with mu_ held.
  void SpawnLocked() REQUIRES(mu_);
  // A request started: wake the watchdog if it sleeps (idle daemon).
  void WakeWatchdogIfAsleep();

  const SessionLoopOptions options_;
  const ScopedFd task_fd_;  // eventfd: tasks queued or stop requested
  fuse_session* session_ = nullptr;  // owned; shared by the serving threads
                                     // while they run, else the owner's
  std::atomic<bool> stop_requested_{false};
  std::atomic<uint64_t> epoch_{0};  // requests started so far
  std::atomic<bool> watchdog_asleep_{false};  // the task thread sleeps untimed

  // The serving threads' bookkeeping and the task queue. A leaf: taken by
  // the serving threads, the watchdog and any thread that posts a task
  // (the transport's dispatcher posts under its own request locks);
  // nothing is locked under it, and no request is served under it.
  mutable Mutex mu_;
  std::condition_variable state_changed_;
  std::vector<std::function<void()>> tasks_ GUARDED_BY(mu_);
  std::atomic<bool> tasks_queued_{false};     // tasks_ non-empty (a hint)
  // Live serving threads by id (their pthread_t for pthread_kill). Threads
  // are detached; each removes itself, last thing before returning, and
  // touches nothing of this object afterwards.
  std::map<uint64_t, pthread_t> live_ GUARDED_BY(mu_);
  uint64_t next_thread_id_ GUARDED_BY(mu_) = 1;
  std::thread task_thread_;
  std::condition_variable spare_cv_;  // spares wait here
  int readers_ GUARDED_BY(mu_) = 0;     // threads in read()
  int busy_ GUARDED_BY(mu_) = 0;        // threads on a request
  int spares_ GUARDED_BY(mu_) = 0;      // threads waiting as spares
  int promotions_ GUARDED_BY(mu_) = 0;  // spares told to read
  bool ready_ GUARDED_BY(mu_) = false;
  bool connection_ended_ GUARDED_BY(mu_) = false;
  bool started_ GUARDED_BY(mu_) = false;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_SESSION_LOOP_H_
