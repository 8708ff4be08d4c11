// ProcEvents: the kernel's process events (fork, exec, exit, and changes of
// a thread's real or effective user or group id) from the proc
// connector (NETLINK_CONNECTOR, CN_IDX_PROC), read on the reactor thread and
// fanned out to subscribers. One netlink socket serves every filter that
// needs them (EVFILT_PROC, and EVFILT_SIGNAL to follow new threads).
//
// Overflow: when the socket's buffer overflows (ENOBUFS) events were lost;
// subscribers are told through OnOverflow and must resynchronise from /proc
// (a lost exit is found by checking the pidfd, a lost fork by listing
// children). It is never silently ignored.
//
// Requirements: the daemon must be in the initial user and pid namespaces
// (the kernel ignores PROC_CN_MCAST_LISTEN from anywhere else, without an
// error) and, on older kernels, have CAP_NET_ADMIN. Create() therefore waits
// for the kernel's acknowledgement of the listen request and reports the
// connector unavailable when none comes.
#ifndef KQUEUED_DAEMON_FILTERS_PROC_PROC_EVENTS_H_
#define KQUEUED_DAEMON_FILTERS_PROC_PROC_EVENTS_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "daemon/core/reactor.h"
#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

struct ProcEvent {
  enum class Kind { kFork, kExec, kExit, kUid, kGid };
  Kind kind;
  // kFork: the parent (thread pid/tgid) and the child (child_pid is a thread
  // id; child_pid == child_tgid for a new process, != for a new thread).
  // kExec / kExit: pid (thread) and tgid of the process concerned.
  pid_t pid = 0;
  pid_t tgid = 0;
  pid_t child_pid = 0;
  pid_t child_tgid = 0;
  // kExit: the wait(2)-style status (exit_code as the kernel reports it).
  int exit_status = 0;
  // kUid / kGid: the thread's (pid, tgid) real or effective user / group id
  // changed (the kernel's commit_creds: set*id calls, an exec of a set-id
  // program); these are its new real and effective ids.
  uint32_t real_id = 0;
  uint32_t effective_id = 0;
  // When it happened, on CLOCK_MONOTONIC (the kernel's ktime_get_ns()): lets
  // a subscriber ignore what happened before it started watching but was
  // read only after.
  uint64_t timestamp_ns = 0;
};

class ProcEvents : public std::enable_shared_from_this<ProcEvents> {
 public:
  using Listener = std::function<void(const ProcEvent&)>;
  using OverflowListener = std::function<void()>;

  // Connects to the proc connector and starts listening on `reactor`. Null
  // with *error (an errno) if the connector is unavailable: EPERM when the
  // kernel refused or we are in a user namespace of our own, ETIMEDOUT when
  // it never acknowledged (a pid namespace), or the errno of the failed
  // socket call.
  static std::shared_ptr<ProcEvents> Create(Reactor* reactor, int* error);
  ~ProcEvents();
  ProcEvents(const ProcEvents&) = delete;
  ProcEvents& operator=(const ProcEvents&) = delete;

  // Listeners run on the reactor thread with no lock held, in the order the
  // kernel sent the events. A listener may still run once after Unsubscribe
  // returns (the reactor may be dispatching from a snapshot): capture weak
  // pointers.
  uint64_t Subscribe(Listener on_event, OverflowListener on_overflow) EXCLUDES(mu_);
  void Unsubscribe(uint64_t id) EXCLUDES(mu_);

  // Times the socket overflowed (ENOBUFS) so far: each time, an unknown
  // number of events was lost (for tests and logs).
  uint64_t overflows() const;

  // Reads and dispatches, now, whatever the socket holds. Call only on the
  // reactor thread and not from a listener (a nested call does nothing).
  // Used when another source (a pidfd) reports an exit: the kernel queued
  // the exit event before the pidfd became readable, so after Drain the
  // subscribers have seen it, unless it was lost to overflow.
  void Drain();

  // ---- Test hooks (never used by the daemon) ----
  // Stops reading the socket (events pile up in its buffer, and are lost
  // when it fills) or resumes. Blocks until the reactor thread applied it;
  // never call it from the reactor thread.
  void PauseForTesting(bool paused);
  // Sets the receive buffer (SO_RCVBUFFORCE; the kernel's minimum applies),
  // so a test can make the kernel drop events. Returns 0 or an errno.
  int SetReceiveBufferForTesting(int bytes);
  // Runs the overflow procedure as if recv() had failed with ENOBUFS, on the
  // reactor thread; blocks until it is done.
  void InjectOverflowForTesting();

 private:
  struct Subscriber {
    uint64_t id;
    Listener on_event;
    OverflowListener on_overflow;
  };
  using Subscribers = std::vector<Subscriber>;

  ProcEvents(Reactor* reactor, ScopedFd sock);
  // Sends PROC_CN_MCAST_LISTEN or _IGNORE, numbered `nonce`. Returns 0 or
  // an errno.
  int SendControl(bool listen, uint32_t nonce);
  // Waits (briefly, blocking) for the kernel's acknowledgement of the listen
  // request numbered `nonce`. Returns 0 or an errno.
  int AwaitAck(uint32_t nonce);
  // Adds the socket to the reactor. Returns 0 or an errno.
  int StartReading();
  void StopReading();
  // The reactor's callback: reads up to a batch of datagrams (the rest wait
  // for the next round, so one busy socket cannot starve the loop).
  void OnReadable();
  // Reads until the socket is empty or `max` datagrams were read.
  void ReadSome(size_t max);
  // Parses one datagram of `n` bytes from the kernel and dispatches it.
  void Parse(const char* buf, size_t n);
  void Dispatch(const ProcEvent& ev);
  void NotifyOverflow();
  std::shared_ptr<const Subscribers> snapshot() const;
  // Runs `fn` on the reactor thread and waits for it.
  void RunOnReactor(std::function<void()> fn);

  Reactor* const reactor_;
  ScopedFd sock_;

  // Dispatch state: touched only by callbacks and posted tasks, which the
  // reactor runs one at a time (on its loop thread or in a CatchUp).
  int64_t token_ = 0;      // the reactor's, 0 while not reading
  bool paused_ = false;    // PauseForTesting
  bool reading_ = false;   // inside ReadSome: nested Drain is a no-op
  bool listening_ = false;  // the kernel acknowledged our LISTEN

  std::atomic<uint64_t> overflows_{0};

  mutable Mutex mu_;  // a leaf: listeners run without it
  // Copy-on-write, so dispatch (per event) takes the lock only to copy a
  // pointer, never to copy the listeners.
  std::shared_ptr<const Subscribers> subscribers_ GUARDED_BY(mu_);
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_PROC_PROC_EVENTS_H_
