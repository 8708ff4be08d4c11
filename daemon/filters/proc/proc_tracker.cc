#include "daemon/filters/proc/proc_tracker.h"

#include <errno.h>
#include <sys/epoll.h>

#include <algorithm>
#include <climits>
#include <deque>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "daemon/core/kqueue.h"
#include "daemon/core/process_context.h"
#include "daemon/filters/proc/proc_info.h"
#include "daemon/os/pidfd.h"
#include "daemon/os/proc_files.h"

namespace kqd {
namespace proc {
namespace {

// How long a known exit waits before it is reported, for the connector's
// last events about the process (see Process); the kernel sends the last
// one microseconds after the pidfd turns readable. It is NOTE_EXIT's added
// latency.
constexpr int64_t kExitEventGraceNs = 10 * 1000 * 1000;

kq_kevent ChildKevent(const Watcher& w, pid_t parent, pid_t child) {
  kq_kevent kev{};
  kev.ident = static_cast<uint64_t>(child);
  kev.filter = EVFILT_PROC;
  // As NetBSD: the parent's flags plus EV_ADD|EV_ENABLE, and EV_FLAG1 to
  // mark a registration by the filter (user changes never carry it: the core
  // masks EV_SYSFLAGS off on input).
  kev.flags = (w.flags & ~(EV_SYSFLAGS | EV_DELETE | EV_DISABLE | EV_RECEIPT)) | EV_ADD |
              EV_ENABLE | EV_FLAG1;
  kev.fflags = w.sfflags;
  kev.data = parent;
  kev.udata = w.udata;
  return kev;
}

}  // namespace

int ProcTracker::Attach(Knote& kn, bool tracked_child, ProcKnoteState* st) {
  // Pids are positive ints; 0 would be the kernel's idle task.
  if (kn.kev.ident == 0 || kn.kev.ident > static_cast<uint64_t>(INT_MAX)) return ESRCH;
  const pid_t pid = static_cast<pid_t>(kn.kev.ident);

  ScopedFd pidfd = OpenPidfd(pid);
  const int open_error = pidfd ? 0 : errno;
  ProcStatus creds;
  bool have_creds = ReadProcStatus(pid, &creds) && creds.tgid == pid;
  bool gone;
  if (pidfd) {
    // The pidfd pins the process: if it still holds its pid after the read,
    // it was not reaped meanwhile, so the credentials read were its own and
    // not those of a process that reused the pid.
    gone = !PidfdHoldsPid(pidfd.get());
    if (gone) pidfd.reset();
  } else {
    // ESRCH: no such process; EINVAL: a thread id, not a process. Others
    // (EMFILE, ENFILE, ENOMEM): we could not afford a pidfd.
    gone = open_error == ESRCH || open_error == EINVAL || !have_creds;
  }

  bool pidless = false;
  uint64_t starttime = 0;
  if (gone) {
    // A child of a tracked process, reaped before its fork event was
    // handled: watch it without a pidfd; its exit event follows in the
    // stream. Its credentials cannot be checked any more: at the fork they
    // were its parent's, which the owner could signal when it registered.
    if (!tracked_child || open_error == EINVAL) return ESRCH;
    pidless = true;
  } else {
    // A tracked child was authorised by its fork job (NetBSD's rule, with
    // the forking process's credentials); a registration by kill(2)'s.
    if (!tracked_child &&
        (have_creds ? !MaySignal(*kn.owner, creds) : !kn.owner->can_kill_any()))
      return EACCES;
    if (!pidfd) {
      // Out of fds: fall back to the connector alone, which needs it.
      if (!events_) return ENOMEM;
      ProcStat stat;
      if (!ReadProcStat(pid, &stat)) return ESRCH;
      pidless = true;
      starttime = stat.starttime;
    }
  }

  Watcher w;
  w.kn = kn.weak_from_this();
  w.kq = kn.kq;
  w.kq_id = kn.kq.lock().get();
  w.owner = kn.owner;
  w.sfflags = kn.sfflags;
  w.flags = kn.kev.flags;
  w.udata = kn.kev.udata;
  if (!tracked_child) w.since_ns = static_cast<uint64_t>(Reactor::Now(Reactor::Clock::kMonotonic));
  // Children that exist already are not forks this knote missed.
  if ((kn.sfflags & NOTE_TRACK) && !tracked_child && !pidless) {
    for (pid_t c : ListChildren(pid)) w.known_children.insert(c);
  }

  MutexLock l(mu_);
  std::shared_ptr<Process> p = pidless && starttime == 0 ? nullptr : RunningLocked(pid);
  if (!p) {
    p = std::make_shared<Process>(&runtime_->reactor(), pid);
    p->pidless = pidless;
    p->starttime = starttime;
    if (!pidless) {
      std::weak_ptr<ProcTracker> weak_self = weak_from_this();
      std::weak_ptr<Process> weak_proc = p;
      int64_t token = runtime_->reactor().AddFd(
          pidfd.get(), EPOLLIN, [weak_self, weak_proc](uint32_t) {
            auto self = weak_self.lock();
            auto proc = weak_proc.lock();
            if (self && proc) self->OnPidfdReadable(proc);
          });
      if (token < 0) return static_cast<int>(-token);
      p->pidfd = std::move(pidfd);
      p->token = token;
    }
    procs_[pid].push_back(p);
  }
  // (Sharing a running record: our own pidfd is closed on return.)
  p->watchers.emplace(&kn, std::move(w));
  st->proc = std::move(p);
  return 0;
}

void ProcTracker::Detach(const Knote& kn, ProcKnoteState* st) {
  std::shared_ptr<Process> p = std::move(st->proc);  // released after the lock
  if (!p) return;
  MutexLock l(mu_);
  p->watchers.erase(&kn);
  if (p->watchers.empty() && !p->exited) RetireLocked(p);
}

void ProcTracker::Update(const Knote& kn, ProcKnoteState* st, uint32_t sfflags,
                         uint64_t udata) {
  if (!st->proc) return;
  MutexLock l(mu_);
  auto it = st->proc->watchers.find(&kn);
  if (it == st->proc->watchers.end()) return;
  it->second.sfflags = sfflags;
  it->second.udata = udata;
}

std::vector<std::shared_ptr<Process>> ProcTracker::LiveLocked(pid_t pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return {};
  std::vector<std::shared_ptr<Process>> out;
  for (const auto& p : it->second) {
    if (!p->exited) out.push_back(p);
  }
  return out;
}

std::shared_ptr<Process> ProcTracker::RunningLocked(pid_t pid) {
  for (const auto& p : LiveLocked(pid)) {
    if (p->pidless) {
      // Only a pidless record of a process that was alive (starttime) can
      // still be; it is the same process if the start time matches.
      ProcStat stat;
      if (p->starttime != 0 && ReadProcStat(pid, &stat) && stat.starttime == p->starttime &&
          stat.state != 'Z' && stat.state != 'X')
        return p;
    } else if (!PidfdExited(p->pidfd.get())) {
      return p;
    }
  }
  return nullptr;
}

bool ProcTracker::WatchedOnLocked(pid_t pid, const Kqueue* kq_id) {
  for (const auto& p : LiveLocked(pid)) {
    for (const auto& [k, w] : p->watchers) {
      if (w.kq_id == kq_id) return true;
    }
  }
  return false;
}

void ProcTracker::FinishLocked(const std::shared_ptr<Process>& p, Notes* notes) {
  p->exited = true;
  for (const auto& [k, w] : p->watchers) notes->push_back(w.kn);
  p->watchers.clear();
  RetireLocked(p);
}

void ProcTracker::RetireLocked(const std::shared_ptr<Process>& p) {
  auto it = procs_.find(p->pid);
  if (it != procs_.end()) {
    auto& v = it->second;
    v.erase(std::remove(v.begin(), v.end(), p), v.end());
    if (v.empty()) procs_.erase(it);
  }
  if (p->token > 0) runtime_->reactor().RemoveFd(p->pidfd.get(), p->token);
  p->token = 0;
  if (p->grace_timer != 0) runtime_->reactor().CancelTimer(p->grace_timer);
  p->grace_timer = 0;
  p->pidfd.reset();
}

void ProcTracker::RememberChildLocked(Watcher* w, pid_t parent, pid_t child) {
  w->known_children.insert(child);
  if (w->known_children.size() < w->prune_at) return;
  // Amortised pruning: drop children that are gone or no longer ours (a
  // reaped pid that reappears among our children is a new fork). Zombies
  // stay: resync would otherwise take them for missed forks.
  for (auto it = w->known_children.begin(); it != w->known_children.end();) {
    ProcStat stat;
    if (!ReadProcStat(*it, &stat) || stat.ppid != parent)
      it = w->known_children.erase(it);
    else
      ++it;
  }
  w->prune_at = std::max<size_t>(64, 2 * w->known_children.size());
}

bool ProcTracker::ForkMayBeTracked(const ForkJob& job) {
  const pid_t parent = job.parent_pid, child = job.child;
  // A child marked for changed ids is set-id (NetBSD's PK_SUGID): only a
  // root forker may have it tracked. The mark holds the forker's effective
  // uid as of the fork, in the stream's order; else /proc tells it now.
  if (job.child_set_id) {
    if (job.forker_euid_known) return job.forker_euid == 0;
    ProcStatus forker;
    return ReadProcStatus(parent, &forker) && forker.tgid == parent && forker.euid == 0;
  }
  // NetBSD decides in fork1(), with the parent's credentials and the new
  // child's, which are then the parent's. We decide when the fork event is
  // read: from what /proc says now. A process already gone stands in for
  // the other (at the fork their credentials were the same); with neither,
  // nothing is attached anyway (Attach finds the child gone).
  ProcStatus forker, target;
  const bool have_forker = ReadProcStatus(parent, &forker) && forker.tgid == parent;
  const bool have_target = ReadProcStatus(child, &target) && target.tgid == child;
  if (!have_forker && !have_target) return true;
  if (!have_forker) forker = target;
  if (!have_target) target = forker;
  return MayTrack(forker, target);
}

void ProcTracker::OnIdChange(const ProcEvent& ev) {
  MutexLock l(mu_);
  IdMark& m = id_marks_[ev.tgid];
  if (ev.kind == ProcEvent::Kind::kUid) {
    m.uids_known = true;
    m.ruid = static_cast<uid_t>(ev.real_id);
    m.euid = static_cast<uid_t>(ev.effective_id);
  } else {
    m.gids_known = true;
    m.rgid = static_cast<gid_t>(ev.real_id);
    m.egid = static_cast<gid_t>(ev.effective_id);
  }
}

void ProcTracker::OnExecMarkLocked(pid_t tgid) {
  auto it = id_marks_.find(tgid);
  if (it == id_marks_.end()) return;
  // NetBSD's exec keeps PK_SUGID for a set-id image, and otherwise clears
  // it when the effective ids equal the real ones. (A set-id image's UID or
  // GID event came before this exec event.) The ids the events reported
  // are those as of this exec; ids never reported come from /proc, which
  // may be later than the exec (or gone: the mark then stays).
  const IdMark& m = it->second;
  bool uids_equal = m.ruid == m.euid, gids_equal = m.rgid == m.egid;
  if (!m.uids_known || !m.gids_known) {
    ProcStatus st;
    if (!ReadProcStatus(tgid, &st) || st.tgid != tgid) return;
    if (!m.uids_known) uids_equal = st.ruid == st.euid;
    if (!m.gids_known) gids_equal = st.rgid == st.egid;
  }
  if (uids_equal && gids_equal) id_marks_.erase(it);
}

void ProcTracker::OnExitMarkLocked(pid_t tgid) {
  auto it = id_marks_.find(tgid);
  if (it == id_marks_.end()) return;
  // One thread's exit (or an exec's old leader's) leaves the process: the
  // mark goes once the process is a zombie or gone.
  ProcStat stat;
  if (!ReadProcStat(tgid, &stat) || stat.state == 'Z' || stat.state == 'X') id_marks_.erase(it);
}

void ProcTracker::PruneMarksLocked() {
  // After an overflow exits may have been lost: drop the marks of processes
  // no longer running.
  for (auto it = id_marks_.begin(); it != id_marks_.end();) {
    ProcStat stat;
    const bool running = ReadProcStat(it->first, &stat) && stat.state != 'Z' && stat.state != 'X';
    it = running ? std::next(it) : id_marks_.erase(it);
  }
}

ForkJob ProcTracker::MakeJobLocked(const Watcher& w, pid_t parent, pid_t child) {
  ForkJob job;
  job.parent = w.kn;
  job.parent_pid = parent;
  job.child = child;
  if (w.sfflags & NOTE_TRACK) {
    job.track = true;
    job.kq = w.kq.lock();
    job.owner = w.owner;
    job.child_kev = ChildKevent(w, parent, child);
    auto m = id_marks_.find(child);
    if (m != id_marks_.end()) {
      job.child_set_id = true;
      job.forker_euid_known = m->second.uids_known;
      job.forker_euid = m->second.euid;
    }
  }
  return job;
}

std::vector<pid_t> ProcTracker::RunForkJobs(std::vector<ForkJob>* jobs) {
  std::vector<pid_t> attached;
  for (ForkJob& job : *jobs) {
    uint32_t flags = 0;
    if (job.track) {
      // NetBSD attaches the child's knote before marking the parent's, so
      // the child's NOTE_CHILD is queued first. It authorises it with the
      // forking process's credentials (see MayTrack), not the watcher's.
      int err = EACCES;
      if (ForkMayBeTracked(job))
        err = job.kq ? job.kq->AttachChild(job.child_kev, job.owner) : EBADF;
      if (err != 0) {
        flags |= kTrackErr;
      } else {
        attached.push_back(job.child);
      }
    }
    Knote::Notify(job.parent, MakeHint(HintKind::kFork, static_cast<uint32_t>(job.child), flags));
  }
  return attached;
}

void ProcTracker::Broadcast(pid_t pid, uint64_t when, long hint) {
  Notes notes;
  {
    MutexLock l(mu_);
    for (const auto& p : LiveLocked(pid)) {
      for (const auto& [k, w] : p->watchers) {
        if (when >= w.since_ns) notes.push_back(w.kn);
      }
    }
  }
  for (const auto& n : notes) Knote::Notify(n, hint);
}

void ProcTracker::OnEvent(const ProcEvent& ev) {
  switch (ev.kind) {
    case ProcEvent::Kind::kFork:
      // A new thread (child_pid != child_tgid) is not a fork. Its reported
      // parent is then the creator's parent anyway (real_parent).
      if (ev.child_pid == ev.child_tgid) OnFork(ev.tgid, ev.child_tgid, ev.timestamp_ns);
      break;
    case ProcEvent::Kind::kExec:
      // After a non-leader thread's exec the process keeps the leader's pid:
      // the tgid names it either way.
      {
        MutexLock l(mu_);
        OnExecMarkLocked(ev.tgid);
      }
      Broadcast(ev.tgid, ev.timestamp_ns, MakeHint(HintKind::kExec));
      break;
    case ProcEvent::Kind::kExit:
      {
        MutexLock l(mu_);
        OnExitMarkLocked(ev.tgid);
      }
      OnExit(ev);
      break;
    case ProcEvent::Kind::kUid:
    case ProcEvent::Kind::kGid:
      OnIdChange(ev);
      break;
  }
}

void ProcTracker::OnFork(pid_t parent, pid_t child, uint64_t when) {
  std::vector<ForkJob> jobs;
  {
    MutexLock l(mu_);
    // The child inherits the forker's changed-ids mark, or has none (a
    // stale one of a former holder of its pid goes).
    auto m = id_marks_.find(parent);
    if (m != id_marks_.end())
      id_marks_[child] = m->second;
    else
      id_marks_.erase(child);
    for (const auto& p : LiveLocked(parent)) {
      for (auto& [k, w] : p->watchers) {
        // A fork from before the registration (then the child is among
        // known_children already).
        if (when < w.since_ns) continue;
        if (w.sfflags & NOTE_TRACK) RememberChildLocked(&w, parent, child);
        jobs.push_back(MakeJobLocked(w, parent, child));
      }
    }
  }
  RunForkJobs(&jobs);
}

void ProcTracker::OnExit(const ProcEvent& ev) {
  Notes notes;
  int status = 0;
  {
    MutexLock l(mu_);
    for (const auto& p : LiveLocked(ev.tgid)) {
      // With a pidfd: the process is gone if the pidfd is readable (else this
      // was one thread of several). Without: the leader's exit is the end.
      const bool gone = p->pidless ? ev.pid == ev.tgid : PidfdExited(p->pidfd.get());
      p->have_status = true;
      p->final_status = gone;
      p->status = ev.exit_status;
      if (!gone) continue;
      if (p->pidless) {
        ArmGraceLocked(p);  // the leader's exit event may be an exec's (see Process)
        continue;
      }
      // The whole process is gone and this is its last thread's exit event:
      // the stream is in order, so everything it sent before is reported.
      status = p->status;
      FinishLocked(p, &notes);
    }
  }
  NotifyExit(notes, status);
}

void ProcTracker::OnPidfdReadable(const std::shared_ptr<Process>& p) {
  // The kernel made the pidfd readable (exit_notify) before it woke the
  // parent's wait(): a kevent after waitpid() catches up to here, and must
  // report NOTE_EXIT now. The process's fork and exec events were sent
  // before its exit, so reading the connector to its end reports them
  // first; only its own exit event may still be on its way.
  if (events_) events_->Drain();
  Notes notes;
  int status = 0;
  {
    MutexLock l(mu_);
    if (p->exited || !p->pidfd) return;  // reported already, or retired
    if (events_ && !StatusKnownLocked(*p, &status)) {
      // A kernel before 6.15, the process reaped and its exit event not yet
      // read: wait (briefly) for that event, which has the status.
      ArmGraceLocked(p);
      return;
    }
    if (!events_) status = ExitStatusLocked(*p);  // nothing more will come
    FinishLocked(p, &notes);
  }
  NotifyExit(notes, status);
}

bool ProcTracker::StatusKnownLocked(const Process& p, int* status) {
  if (p.final_status) {
    *status = p.status;
    return true;
  }
  if (!p.pidfd) return false;
  // Reaped (6.15+): the kernel kept the status with the pidfd.
  if (PidfdExitStatus(p.pidfd.get(), status)) return true;
  // A zombie: /proc has it (the pidfd check after the read makes sure the
  // stat was this process's). It is the leader's exit code, the process's
  // unless the leader ended (pthread_exit) before another thread's
  // exit_group, which the connector's event would have told.
  ProcStat stat;
  if (ReadProcStat(p.pid, &stat) && (stat.state == 'Z' || stat.state == 'X') &&
      PidfdHoldsPid(p.pidfd.get())) {
    *status = stat.exit_code;
    return true;
  }
  // Reaped between the two looks.
  return PidfdExitStatus(p.pidfd.get(), status);
}

void ProcTracker::ArmGraceLocked(const std::shared_ptr<Process>& p) {
  // Readable for good: stop watching the pidfd (level-triggered, it would
  // fire on every loop); keep it to check the process's identity.
  if (p->token > 0) runtime_->reactor().RemoveFd(p->pidfd.get(), p->token);
  p->token = 0;
  if (p->grace_timer != 0) return;
  std::weak_ptr<ProcTracker> weak_self = weak_from_this();
  std::weak_ptr<Process> weak_proc = p;
  p->grace_timer = runtime_->reactor().AddTimer(
      Reactor::Clock::kMonotonic, Reactor::Now(Reactor::Clock::kMonotonic) + kExitEventGraceNs,
      [weak_self, weak_proc] {
        auto self = weak_self.lock();
        auto proc = weak_proc.lock();
        if (self && proc) self->OnGraceExpired(proc);
      });
}

void ProcTracker::OnGraceExpired(const std::shared_ptr<Process>& p) {
  // Everything the kernel sent about the process until now, first.
  if (events_) events_->Drain();
  Notes notes;
  int status = 0;
  {
    MutexLock l(mu_);
    p->grace_timer = 0;  // the reactor forgets a timer once it has run it
    if (p->exited) return;
    if (!p->pidless && !p->pidfd) return;  // retired meanwhile
    status = ExitStatusLocked(*p);
    FinishLocked(p, &notes);
  }
  NotifyExit(notes, status);
}

int ProcTracker::ExitStatusLocked(const Process& p) {
  if (p.final_status) return p.status;
  // A zombie still has its status in /proc (the leader's exit code: the
  // process's unless the leader ended before an exit_group). The pidfd
  // check after the read makes sure the stat was this process's (not
  // reaped, so its pid not reused, meanwhile).
  ProcStat stat;
  if (p.pidfd && ReadProcStat(p.pid, &stat) && (stat.state == 'Z' || stat.state == 'X') &&
      PidfdHoldsPid(p.pidfd.get()))
    return stat.exit_code;
  return p.have_status ? p.status : 0;
}

void ProcTracker::Resync() {
  {
    MutexLock l(mu_);
    PruneMarksLocked();
  }
  // Exits: a process with a pidfd reports its own (the pidfd stays
  // readable); only pidless ones need looking at.
  ResyncExitsWithoutPidfd();
  ResyncForks();
}

void ProcTracker::ResyncExitsWithoutPidfd() {
  // The queue has just been read to its end: a pidless process found gone
  // now lost its exit event. It is reported after the usual grace period.
  MutexLock l(mu_);
  for (const auto& [pid, v] : procs_) {
    for (const auto& p : v) {
      if (!p->pidless || p->exited || p->grace_timer != 0) continue;
      ProcStat stat;
      const bool same = p->starttime != 0 && ReadProcStat(p->pid, &stat) &&
                        stat.starttime == p->starttime;
      if (same && stat.state != 'Z' && stat.state != 'X') continue;  // still running
      // A zombie's status beats an earlier thread's exit event.
      if (same) {
        p->have_status = true;
        p->final_status = true;
        p->status = stat.exit_code;
      }
      ArmGraceLocked(p);
    }
  }
}

void ProcTracker::ResyncForks() {
  // Every process tracked with a pidfd lists its children; those a
  // NOTE_TRACK knote has not seen are forks that were lost. Children
  // attached here may have forked unseen too: they join the work list.
  // (Pidless processes are skipped: their pid may name another process.)
  std::deque<pid_t> work;
  {
    MutexLock l(mu_);
    for (const auto& [pid, v] : procs_) {
      for (const auto& p : v) {
        if (p->exited || p->pidless) continue;
        for (const auto& [k, w] : p->watchers) {
          if (w.sfflags & NOTE_TRACK) {
            work.push_back(pid);
            break;
          }
        }
      }
    }
  }
  std::set<pid_t> done;
  while (!work.empty()) {
    const pid_t parent = work.front();
    work.pop_front();
    if (!done.insert(parent).second) continue;
    std::vector<ForkJob> jobs;
    {
      MutexLock l(mu_);
      std::shared_ptr<Process> p = RunningLocked(parent);
      if (!p || p->pidless) continue;
      std::vector<pid_t> kids = ListChildren(parent);
      // Reaped during the listing: the list might be another process's.
      if (!PidfdHoldsPid(p->pidfd.get())) continue;
      std::set<pid_t> listed(kids.begin(), kids.end());
      for (auto& [k, w] : p->watchers) {
        if (!(w.sfflags & NOTE_TRACK)) continue;
        // Children no longer listed were reaped (or reparented): a pid that
        // shows up again later is a new child.
        for (auto it = w.known_children.begin(); it != w.known_children.end();)
          it = listed.count(*it) ? std::next(it) : w.known_children.erase(it);
        for (pid_t c : kids) {
          if (!w.known_children.insert(c).second) continue;
          if (WatchedOnLocked(c, w.kq_id)) continue;
          jobs.push_back(MakeJobLocked(w, parent, c));
        }
      }
    }
    for (pid_t c : RunForkJobs(&jobs)) work.push_back(c);
  }
}

}  // namespace proc
}  // namespace kqd
