// ProcTracker: the EVFILT_PROC filter's view of the watched processes (see
// proc_filter.h for the filter's contract). One record per watched process,
// with its pidfd, shared by every knote on it; fork, exec and exit events
// from ProcEvents routed to those knotes; lost forks and exits found again
// after a connector overflow. The filter ops (proc_filter.cc) are its only
// user.
#ifndef KQUEUED_DAEMON_FILTERS_PROC_PROC_TRACKER_H_
#define KQUEUED_DAEMON_FILTERS_PROC_PROC_TRACKER_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include "daemon/core/kqueue.h"
#include "daemon/core/process_context.h"
#include "daemon/core/reactor.h"
#include "daemon/core/runtime.h"
#include "daemon/filters/proc/proc_events.h"
#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"
#include "proto/kqueue_abi.h"

namespace kqd {
namespace proc {

// ---- Hints -----------------------------------------------------------------
// What the tracker reports to a knote through Knote::Notify, packed in the
// long hint: the kind in bits 48 and up, flags in bits 32-47, a value (a
// child pid, an exit status) in bits 0-31. Never 0 (kHintEvaluate).
enum class HintKind : long {
  kFork = 1,          // value: the child; flag kTrackErr: it was not attached
  kExec = 2,
  kExit = 3,          // value: the wait(2)-style status
  kDeferredExit = 4,  // report an exit held back behind NOTE_CHILD, if retrieved
};
constexpr uint32_t kTrackErr = 1;

inline long MakeHint(HintKind kind, uint32_t value = 0, uint32_t flags = 0) {
  return (static_cast<long>(kind) << 48) | (static_cast<long>(flags & 0xffff) << 32) |
         static_cast<long>(value);
}
inline HintKind KindOf(long hint) { return static_cast<HintKind>(hint >> 48); }
inline uint32_t ValueOf(long hint) { return static_cast<uint32_t>(hint); }
inline uint32_t FlagsOf(long hint) { return static_cast<uint32_t>(hint >> 32) & 0xffff; }

// ---- The tracker's records ----------------------------------------------------

// One knote as the tracker sees it: what event sources need without taking
// the knote's kqueue lock (NOTE_TRACK registers the child's knote with it).
// A copy of the knote's registration, kept current by Touch.
struct Watcher {
  std::weak_ptr<Knote> kn;
  std::weak_ptr<Kqueue> kq;
  const Kqueue* kq_id = nullptr;  // identity only, never dereferenced
  std::shared_ptr<ProcessContext> owner;
  uint32_t sfflags = 0;
  uint32_t flags = 0;
  uint64_t udata = 0;
  // Forks and execs the kernel stamped before this (CLOCK_MONOTONIC ns)
  // happened before the registration, though read after it: not reported.
  // 0 for a tracked child, whose every event follows its fork.
  uint64_t since_ns = 0;
  // NOTE_TRACK: children this knote has seen forked (or that existed when
  // it was registered), so that a resynchronisation after an overflow
  // attaches only forks that were really missed. Entries for children that
  // have gone (reaped, or reparented) are pruned; see RememberChildLocked.
  std::set<pid_t> known_children;
  size_t prune_at = 64;
};

// One watched process, shared by every knote on it.
//
// When has it exited, and with what status? With a pidfd (the normal case)
// the pidfd's readability says the whole process has exited; a thread's
// exit event, even the leader's, does not. Without one ("pidless") the
// leader's exit event is all there is: that is the case of a tracked child
// already reaped when its fork event is handled (its events are still ahead
// in the stream, the stream being in order), and of pidfd_open failing for
// want of fds.
//
// With a pidfd, the exit is reported as soon as the pidfd is readable —
// on the reactor thread, or in the catch-up of a kevent called after the
// parent's waitpid() returned (the kernel makes the pidfd readable in
// exit_notify, before it wakes the parent; see Reactor's CATCH-UP) — after
// reading everything the connector holds: it may still hold earlier events
// of the process (an exec, a fork), which must be reported first, not lost
// (an exec by a non-leader thread, for one, is preceded by the old leader's
// exit event). The status is the last thread's exit event's if it has been
// read (exit_group gives every thread the group's), else PIDFD_INFO_EXIT
// once reaped (Linux 6.15+), else /proc's while a zombie.
//
// Otherwise — no pidfd, or a kernel before 6.15 where a reaped process's
// status lives only in its exit event, which the connector sends just after
// exit_notify (proc_exit_connector) — the exit is reported after a short
// grace period (kExitEventGraceNs), then after reading the connector. On
// such a kernel a kevent right after waitpid() may miss NOTE_EXIT by that
// much (docs/filters.md). The status is then the last exit event's if one
// came once the process was gone, else /proc's while it is a zombie, else
// the last exit event seen, else (lost to overflow and already reaped) 0.
struct Process {
  Process(Reactor* r, pid_t p) : reactor(r), pid(p) {}
  ~Process() {
    if (token > 0) reactor->RemoveFd(pidfd.get(), token);
    if (grace_timer != 0) reactor->CancelTimer(grace_timer);
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  Reactor* const reactor;
  const pid_t pid;
  ScopedFd pidfd;
  int64_t token = 0;        // the reactor's, for pidfd
  uint64_t grace_timer = 0; // the reactor's; armed once the exit is known
  bool pidless = false;     // immutable after creation
  uint64_t starttime = 0;   // pidless: identity for resync; 0 if already gone
  bool exited = false;      // reported (or being reported) to its knotes
  // The status of the latest exit event seen for any of its threads, and
  // whether that event came once the process was known to be gone.
  bool have_status = false;
  bool final_status = false;
  int status = 0;
  std::map<const Knote*, Watcher> watchers;
};

// The filter's per-knote state; guarded by the knote's kqueue lock.
class ProcKnoteState : public KnoteState {
 public:
  std::shared_ptr<Process> proc;  // null once detached
  bool exited = false;            // the exit is known
  bool exit_deferred = false;     // known, held back behind NOTE_CHILD
  int status = 0;
  bool post_pending = false;      // a kDeferredExit notification is posted
};

// A fork to report to one watcher, prepared under the tracker's lock and
// carried out without it.
struct ForkJob {
  std::weak_ptr<Knote> parent;
  pid_t parent_pid = 0;
  pid_t child = 0;
  bool track = false;
  std::shared_ptr<Kqueue> kq;
  std::shared_ptr<ProcessContext> owner;
  kq_kevent child_kev{};
  // The child carries a changed-ids mark (see IdMark): it is set-id for
  // NOTE_TRACK, and the mark may know the forker's effective uid.
  bool child_set_id = false;
  bool forker_euid_known = false;
  uid_t forker_euid = 0;
};

// NetBSD marks a process set-id (PK_SUGID) whenever it changes a user or
// group id, and fork passes the mark on; /proc shows no trace of it once
// every id is equal again (root's setuid(nobody)). The tracker follows the
// proc connector's UID/GID events instead: a live process that changed its
// real or effective ids, or descends through forks from one that did, holds
// a mark until it execs with equal real and effective ids (as NetBSD's exec
// clears PK_SUGID) or is gone. Keyed by tgid: the stream reports a
// process's exit before any reuse of its pid, and every new process's fork
// event sets or clears its pid's mark, so a stale mark never outlives the
// next fork to reuse the pid.
struct IdMark {
  // The ids as the last UID / GID event reported them (the kernel's events
  // are in order, so these are the process's ids at the point the stream
  // has reached); unknown until such an event.
  bool uids_known = false;
  uid_t ruid = 0;
  uid_t euid = 0;
  bool gids_known = false;
  gid_t rgid = 0;
  gid_t egid = 0;
};

// ---- ProcTracker ----------------------------------------------------------------
//
// Routes process events to knotes. Lock order: a kqueue's lock, then the
// tracker's mu_, then the reactor's. Filter hooks (under a kqueue lock) call
// Attach/Detach/Update; event sources (the reactor thread) take mu_ only to
// copy out whom to notify, and call Knote::Notify and Kqueue::AttachChild
// with no lock held.
class ProcTracker : public std::enable_shared_from_this<ProcTracker> {
 public:
  ProcTracker(Runtime* runtime, std::shared_ptr<ProcEvents> events)
      : runtime_(runtime), events_(std::move(events)) {}

  ~ProcTracker() {
    if (events_) events_->Unsubscribe(subscription_);
  }

  void Start() {
    if (!events_) return;
    std::weak_ptr<ProcTracker> weak = weak_from_this();
    subscription_ = events_->Subscribe(
        [weak](const ProcEvent& ev) {
          if (auto self = weak.lock()) self->OnEvent(ev);
        },
        [weak] {
          if (auto self = weak.lock()) self->Resync();
        });
  }

  Reactor& reactor() { return runtime_->reactor(); }

  // Under kn's kqueue lock. `tracked_child`: registered by NOTE_TRACK.
  int Attach(Knote& kn, bool tracked_child, ProcKnoteState* st) EXCLUDES(mu_);
  void Detach(const Knote& kn, ProcKnoteState* st) EXCLUDES(mu_);
  void Update(const Knote& kn, ProcKnoteState* st, uint32_t sfflags, uint64_t udata)
      EXCLUDES(mu_);

 private:
  using Notes = std::vector<std::weak_ptr<Knote>>;

  void OnEvent(const ProcEvent& ev) EXCLUDES(mu_);
  void OnFork(pid_t parent, pid_t child, uint64_t when) EXCLUDES(mu_);
  void OnExit(const ProcEvent& ev) EXCLUDES(mu_);
  void OnPidfdReadable(const std::shared_ptr<Process>& p) EXCLUDES(mu_);
  // The process is gone: report it after the grace period (see Process).
  void ArmGraceLocked(const std::shared_ptr<Process>& p) REQUIRES(mu_);
  void OnGraceExpired(const std::shared_ptr<Process>& p) EXCLUDES(mu_);
  // The status to report for an exited process (see Process).
  static int ExitStatusLocked(const Process& p);
  // The status of an exited process with a pidfd, if it can be had now: its
  // final exit event, else PIDFD_INFO_EXIT once reaped (Linux 6.15+), else
  // /proc while a zombie. False otherwise (an older kernel after the reap).
  static bool StatusKnownLocked(const Process& p, int* status);
  void Resync() EXCLUDES(mu_);
  void ResyncExitsWithoutPidfd() EXCLUDES(mu_);
  void ResyncForks() EXCLUDES(mu_);

  // Notifies every knote of the live records of `pid` registered before
  // `when` (ns, CLOCK_MONOTONIC).
  void Broadcast(pid_t pid, uint64_t when, long hint) EXCLUDES(mu_);
  static void NotifyExit(const Notes& notes, int status) {
    for (const auto& n : notes)
      Knote::Notify(n, MakeHint(HintKind::kExit, static_cast<uint32_t>(status)));
  }
  // Attaches the children and notifies the parents. Returns the children
  // that got a knote.
  std::vector<pid_t> RunForkJobs(std::vector<ForkJob>* jobs) EXCLUDES(mu_);

  // The records of `pid` not yet reported exited.
  std::vector<std::shared_ptr<Process>> LiveLocked(pid_t pid) REQUIRES(mu_);
  // A record whose process is alive (pidfd not readable) for `pid`: there is
  // at most one, since a live process owns its pid.
  std::shared_ptr<Process> RunningLocked(pid_t pid) REQUIRES(mu_);
  // Whether `pid` already has a knote on kqueue `kq_id`.
  bool WatchedOnLocked(pid_t pid, const Kqueue* kq_id) REQUIRES(mu_);
  // Marks p exited, collects its knotes, and forgets it.
  void FinishLocked(const std::shared_ptr<Process>& p, Notes* notes) REQUIRES(mu_);
  // Forgets p: no more events are routed to it; its pidfd is closed.
  void RetireLocked(const std::shared_ptr<Process>& p) REQUIRES(mu_);
  void RememberChildLocked(Watcher* w, pid_t parent, pid_t child) REQUIRES(mu_);
  ForkJob MakeJobLocked(const Watcher& w, pid_t parent, pid_t child) REQUIRES(mu_);
  // NOTE_TRACK's authorisation of a child's knote (NetBSD's
  // KAUTH_PROCESS_KEVENT_FILTER with the forking process's credentials).
  // Reads /proc: call without mu_.
  static bool ForkMayBeTracked(const ForkJob& job);
  // The changed-ids marks (see IdMark).
  void OnIdChange(const ProcEvent& ev) EXCLUDES(mu_);
  void OnExecMarkLocked(pid_t tgid) REQUIRES(mu_);
  void OnExitMarkLocked(pid_t tgid) REQUIRES(mu_);
  void PruneMarksLocked() REQUIRES(mu_);

  Runtime* const runtime_;
  const std::shared_ptr<ProcEvents> events_;
  uint64_t subscription_ = 0;

  // Guards procs_ and every Process's mutable fields (those the analysis
  // cannot tie to this lock, being another object's: the *Locked methods
  // that touch them require it, the static ones are called only by those).
  // Taken under a kqueue's lock (the filter hooks), before the reactor's;
  // knotes are notified after it is released.
  Mutex mu_;
  std::unordered_map<pid_t, std::vector<std::shared_ptr<Process>>> procs_ GUARDED_BY(mu_);
  // One per live process that changed ids (or descends from one that did):
  // bounded by the live processes; see IdMark.
  std::unordered_map<pid_t, IdMark> id_marks_ GUARDED_BY(mu_);
};

}  // namespace proc
}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_PROC_PROC_TRACKER_H_
