// The threads that read a FUSE/CUSE connection.
//
// Several serving threads block in read() on the connection's fd. The kernel
// queues a reader exclusively, so each request wakes exactly one idle thread,
// which reads it, dispatches it and writes the reply itself: a small request
// costs no hop between threads. A thread that is slow on one request (a huge
// changelist, a caller page backed by a slow filesystem) holds only itself;
// the others keep serving. The pool grows by one thread whenever a request
// leaves no thread idle (up to max_threads) and shrinks back towards
// min_threads when threads sit idle (not within a second of growing).
//
// Tasks posted from any thread (interrupt callbacks) run on a small task
// thread that sleeps on an eventfd, or on a serving thread between two
// requests, whichever comes first — never inside a libfuse call.
//
// Signals: serving threads block every signal except kWakeSignal, whose
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
  bool Start(fuse_session* se, std::string* error);

  // Runs `task` soon on a serving thread or the task thread. Thread-safe.
  // Tasks still queued when the loop stops are dropped without running.
  void Post(std::function<void()> task);

  // Called on a serving thread once the kernel's INIT has been answered.
  void MarkReady();

  // Waits until MarkReady() was called, the loop ended, or `timeout` passed.
  // True only if ready and still running.
  bool WaitReady(std::chrono::milliseconds timeout);

  // False once the serving threads have ended (Stop(), or the kernel closed
  // the connection, e.g. an administrator unmounted the file).
  bool running() const;

  // True from the moment Stop() is called: a handler working through a long
  // request should give up at its next checkpoint. Thread-safe, lock-free.
  bool stopping() const { return stop_requested_.load(std::memory_order_relaxed); }

  // Serving threads alive now (for tests and statistics).
  int threads() const;

  // Stops and joins every thread: no request is read afterwards. A thread
  // busy with a request finishes it first (handlers check stopping()). Must
  // not be called from a serving thread. Idempotent.
  void Stop();

  // Destroys the session after Stop(), closing its fd: the kernel aborts
  // whatever is still on the connection (a CUSE device node disappears,
  // a FUSE mount left in place would answer ENOTCONN). Idempotent.
  void CloseSession();

 private:
  SessionLoop(ScopedFd task_fd, SessionLoopOptions options);

  // One serving thread's body.
  void Serve(uint64_t id);
  // The task thread's body.
  void RunTaskThread();
  // Runs the tasks queued so far.
  void RunTasks();
  // Starts one more serving thread. Call with mu_ held.
  void SpawnLocked();
  // Whether the calling serving thread should exit now that its request is
  // done (too many idle threads). Takes mu_.
  bool ShouldRetire();

  const SessionLoopOptions options_;
  const ScopedFd task_fd_;  // eventfd: tasks queued or stop requested
  fuse_session* session_ = nullptr;  // owned; shared by the serving threads
                                     // while they run, else the owner's
  std::atomic<bool> stop_requested_{false};
  std::atomic<int> idle_{0};  // serving threads waiting in read()
  std::atomic<int64_t> last_spawn_ns_{0};  // CLOCK_MONOTONIC of the last spawn

  mutable std::mutex mu_;
  std::condition_variable state_changed_;
  std::vector<std::function<void()>> tasks_;  // guarded by mu_
  std::atomic<bool> tasks_queued_{false};     // tasks_ non-empty (a hint)
  // Live serving threads by id (their pthread_t for pthread_kill). Threads
  // are detached; each removes itself, last thing before returning, and
  // touches nothing of this object afterwards.
  std::map<uint64_t, pthread_t> live_;  // guarded by mu_
  uint64_t next_thread_id_ = 1;         // guarded by mu_
  std::thread task_thread_;
  bool ready_ = false;              // guarded by mu_
  bool connection_ended_ = false;   // guarded by mu_
  bool started_ = false;            // guarded by mu_
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_SESSION_LOOP_H_
