// The one thread that reads a FUSE/CUSE connection.
//
// Every kernel request is read and dispatched on this thread, and handlers
// never block on it: an ioctl that has to wait is parked and answered later,
// from any thread. The thread also runs small tasks posted from other threads
// (interrupt callbacks), and an eventfd wakes it for those and for Stop().
//
// The loop owns the fuse_session once started. Signals are blocked on the
// loop thread so that process-directed signals (SIGTERM, SIGALRM...) go to
// the application's own threads and never disturb the loop.
#ifndef KQUEUED_DAEMON_TRANSPORT_SESSION_LOOP_H_
#define KQUEUED_DAEMON_TRANSPORT_SESSION_LOOP_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/util/scoped_fd.h"

struct fuse_session;

namespace kqd {

class SessionLoop {
 public:
  // Creates the wake-up eventfd; null (with *error) if that fails.
  static std::unique_ptr<SessionLoop> Create(std::string* error);

  // Stop(), then CloseSession().
  ~SessionLoop();

  SessionLoop(const SessionLoop&) = delete;
  SessionLoop& operator=(const SessionLoop&) = delete;

  // Takes ownership of `se` (also on failure), whose fd is already connected
  // to the kernel (a mounted /dev/fuse or an opened /dev/cuse), makes the fd
  // non-blocking and starts the loop thread. Call once.
  bool Start(fuse_session* se, std::string* error);

  // Runs `task` on the loop thread soon. Thread-safe. Tasks still queued when
  // the loop stops are dropped without running.
  void Post(std::function<void()> task);

  // Called on the loop thread once the kernel's INIT has been answered.
  void MarkReady();

  // Waits until MarkReady() was called, the loop ended, or `timeout` passed.
  // True only if ready and still running.
  bool WaitReady(std::chrono::milliseconds timeout);

  // False once the loop thread has ended (Stop(), or the kernel closed the
  // connection, e.g. an administrator unmounted the file).
  bool running() const;

  // Stops and joins the loop thread: no request is read afterwards. Must not
  // be called from the loop thread. Idempotent.
  void Stop();

  // Destroys the session after Stop(), closing its fd: the kernel aborts
  // whatever is still on the connection (a CUSE device node disappears,
  // a FUSE mount left in place would answer ENOTCONN). Idempotent.
  void CloseSession();

 private:
  explicit SessionLoop(ScopedFd wake_fd);

  void Run();
  // Runs the tasks queued so far (loop thread).
  void RunTasks();
  void Wake();

  const ScopedFd wake_fd_;  // eventfd: tasks queued or stop requested
  fuse_session* session_ = nullptr;  // owned; touched by the loop thread
                                     // while it runs, else by the owner
  std::thread thread_;
  std::atomic<bool> stop_requested_{false};

  mutable std::mutex mu_;
  std::condition_variable state_changed_;
  std::vector<std::function<void()>> tasks_;  // guarded by mu_
  bool ready_ = false;                        // guarded by mu_
  bool ended_ = false;                        // guarded by mu_
  bool started_ = false;                      // guarded by mu_
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_SESSION_LOOP_H_
