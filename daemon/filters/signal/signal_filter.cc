#include "daemon/filters/signal/signal_filter.h"

#include <errno.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <sys/epoll.h>

#include "daemon/core/process_context.h"
#include "daemon/filters/signal/signal_trace.h"
#include "daemon/os/pidfd.h"
#include "daemon/os/proc_files.h"
#include "daemon/util/mutex.h"
#include "daemon/util/saturating.h"

namespace kqd {
namespace {

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// The thread group of thread `tid`, or -1 if it is gone. /proc/<tid> works
// for any thread id, though only group leaders are listed in /proc.
pid_t TgidOf(pid_t tid) {
  ProcStatus status;
  return ReadProcStatus(tid, &status) ? status.tgid : -1;
}

// What a knote remembers for Detach.
class SignalState : public KnoteState {
 public:
  SignalState(pid_t tgid, int sig) : tgid(tgid), sig(sig) {}
  const pid_t tgid;
  const int sig;
};

// Every EVFILT_SIGNAL knote of the daemon, by (process, signal), and the
// tracepoint readers they share. Shared by the filter ops and (weakly) by
// the trace, timer and ProcEvents callbacks.
//
// Generations. A new filter means a new SignalTrace (a new ftrace
// instance). The old one is not closed at once: its rings may hold samples
// not yet read. Each generation owns a time window
// [from, until) in CLOCK_MONOTONIC sample time; the hand-over instant T is
// taken after the new one is enabled and before the old one is disabled, so
// every signal lies in exactly one window and none is counted twice. The
// old generation is drained a last time kRetireDelayNs later and closed.
//
// Rebuilds. A registration that the current filter would miss (a new
// process or signal number) rebuilds at once, before EV_ADD returns. Other
// changes (threads appearing or exiting, knotes deleted) only make the
// filter stale in a harmless way — user space checks every sample, and
// thread-directed signals pass the filter anyway — so they are coalesced
// into one rebuild kRebuildDelayNs later.
//
// Lock order: a kqueue's lock (Attach/Detach run under it), then mu_, then
// the reactor's. Knotes are notified only after mu_ is released.
class SignalWatchers : public std::enable_shared_from_this<SignalWatchers> {
 public:
  SignalWatchers(Reactor* reactor, std::shared_ptr<ProcEvents> proc_events)
      : reactor_(reactor), proc_events_(std::move(proc_events)) {}

  ~SignalWatchers() {
    if (proc_events_ && subscription_ != 0) proc_events_->Unsubscribe(subscription_);
  }

  int Add(Knote& kn, pid_t tgid, int sig) {
    MutexLock l(mu_);
    if (trace_error_ != 0) return trace_error_;
    auto [it, fresh] = procs_.try_emplace(tgid);
    Process& p = it->second;
    if (fresh) {
      // The knote watches this process, not its number: a pidfd tells when
      // it is gone, and counting stops then (a reused pid is another
      // process, perhaps another user's). The caller is alive: it is in
      // its kevent call.
      if (int err = BindLocked(tgid, p)) {
        procs_.erase(it);
        return err;
      }
      RescanLocked(tgid, p);
    }
    p.by_sig[sig].push_back(Entry{kn.weak_from_this(), &kn, 0});
    p.entries++;
    sig_entries_[sig]++;
    if (int err = RebuildLocked()) {
      RemoveLocked(kn, tgid, sig);
      if (err == ENOTSUP) trace_error_ = err;  // no privilege: for good
      return err;
    }
    // Taken once the kernel filter lets this process's signals through:
    // anything generated from now on is counted, nothing from before.
    p.by_sig[sig].back().since_ns = MonotonicNs();
    return 0;
  }

  void Remove(const Knote& kn, pid_t tgid, int sig) {
    MutexLock l(mu_);
    RemoveLocked(kn, tgid, sig);
    ScheduleRebuildLocked();
  }

 private:
  struct Entry {
    std::weak_ptr<Knote> kn;
    const Knote* key;   // identity for Remove; never dereferenced
    uint64_t since_ns;  // CLOCK_MONOTONIC; earlier samples are not counted
  };
  struct Process {
    std::set<pid_t> threads;  // always includes the tgid itself
    std::vector<Entry> by_sig[kMaxSignalNumber + 1];
    size_t entries = 0;
    ScopedFd pidfd;       // the process itself: readable once it has exited
    int64_t token = 0;    // the reactor's, for pidfd
    uint64_t serial = 0;  // tells this record from a later one for the same pid
  };
  struct Generation {
    std::shared_ptr<SignalTrace> trace;
    uint64_t from_ns;
    uint64_t until_ns;
  };
  struct Exited {
    pid_t tgid;
    uint64_t at_ns;  // when its exit event was processed
  };

  // How long an exited thread's id still maps to its process.
  static constexpr uint64_t kExitedGraceNs = 5000000000u;
  // How long a retired generation is kept for samples still being written.
  static constexpr int64_t kRetireDelayNs = 100000000;
  // How long thread changes and deletions wait to be folded into a rebuild.
  static constexpr int64_t kRebuildDelayNs = 50000000;

  void RemoveLocked(const Knote& kn, pid_t tgid, int sig) REQUIRES(mu_) {
    auto it = procs_.find(tgid);
    if (it == procs_.end()) return;
    Process& p = it->second;
    std::vector<Entry>& entries = p.by_sig[sig];
    for (auto e = entries.begin(); e != entries.end(); ++e) {
      if (e->key != &kn) continue;
      entries.erase(e);
      p.entries--;
      sig_entries_[sig]--;
      break;
    }
    if (p.entries == 0) DropLocked(it);
  }

  // Opens p's pidfd and watches it. 0 or an errno.
  int BindLocked(pid_t tgid, Process& p) REQUIRES(mu_) {
    p.pidfd = OpenPidfd(tgid);
    if (!p.pidfd) return errno == EMFILE || errno == ENFILE ? ENOMEM : ESRCH;
    p.serial = next_serial_++;
    std::weak_ptr<SignalWatchers> weak = weak_from_this();
    const uint64_t serial = p.serial;
    const int64_t token = reactor_->AddFd(p.pidfd.get(), EPOLLIN, [weak, tgid, serial](uint32_t) {
      if (auto self = weak.lock()) self->OnProcessExit(tgid, serial);
    });
    if (token < 0) return static_cast<int>(-token);
    p.token = token;
    return 0;
  }

  // Forgets a process record: its threads, its knotes' entries, its pidfd.
  void DropLocked(std::map<pid_t, Process>::iterator it) REQUIRES(mu_) {
    Process& p = it->second;
    for (pid_t tid : p.threads) ForgetThreadLocked(it->first, tid);
    for (int s = 1; s <= kMaxSignalNumber; s++) sig_entries_[s] -= p.by_sig[s].size();
    if (p.token > 0) reactor_->RemoveFd(p.pidfd.get(), p.token);
    procs_.erase(it);
  }

  // The watched process exited: its knotes count no more (as on BSD, where
  // they hang off the process), and its pid may now name another process.
  void OnProcessExit(pid_t tgid, uint64_t serial) {
    MutexLock l(mu_);
    auto it = procs_.find(tgid);
    if (it == procs_.end() || it->second.serial != serial) return;
    DropLocked(it);
    ScheduleRebuildLocked();
  }

  // Returns whether the thread was new to p.
  bool AddThreadLocked(pid_t tgid, Process& p, pid_t tid) REQUIRES(mu_) {
    thread_tgid_[tid] = tgid;  // a reused id now belongs to this process
    return p.threads.insert(tid).second;
  }

  void ForgetThreadLocked(pid_t tgid, pid_t tid) REQUIRES(mu_) {
    auto t = thread_tgid_.find(tid);
    if (t != thread_tgid_.end() && t->second == tgid) thread_tgid_.erase(t);
  }

  // Makes p.threads the process's current threads (plus the tgid, which
  // kill() names even after the leader thread exited).
  void RescanLocked(pid_t tgid, Process& p) REQUIRES(mu_) {
    std::set<pid_t> now = ListThreads(tgid);
    now.insert(tgid);
    for (pid_t tid : p.threads) {
      if (!now.count(tid)) ForgetThreadLocked(tgid, tid);
    }
    p.threads.clear();
    for (pid_t tid : now) AddThreadLocked(tgid, p, tid);
  }

  // "sig == 10 || sig == 12" over the watched signal numbers.
  std::string SignalExprLocked() const REQUIRES(mu_) {
    std::string expr;
    for (int s = 1; s <= kMaxSignalNumber; s++) {
      if (sig_entries_[s] == 0) continue;
      if (!expr.empty()) expr += " || ";
      expr += "sig == " + std::to_string(s);
    }
    return expr;
  }

  // Filters to try, best first. The best passes the watched signal numbers
  // aimed at a known thread of a watched process, plus thread-directed ones
  // (group == 0) to any thread, for threads too new to be known. Too many
  // threads for the kernel's filter size: signal numbers only. The kernel
  // refusing even that: none. User space checks every sample anyway.
  std::vector<std::string> CandidateFiltersLocked() const REQUIRES(mu_) {
    const std::string sigs = SignalExprLocked();
    std::string full = "(" + sigs + ") && (group == 0";
    for (const auto& entry : thread_tgid_) full += " || pid == " + std::to_string(entry.first);
    full += ")";
    std::vector<std::string> candidates;
    if (full.size() <= SignalTrace::kMaxFilterLength) candidates.push_back(full);
    candidates.push_back(sigs);
    candidates.push_back("");
    return candidates;
  }

  // Brings the tracing in line with what is watched: none when nothing is,
  // else a generation whose filter is the best candidate the kernel takes.
  // Returns 0 or an errno (the current generation is then unchanged).
  int RebuildLocked() REQUIRES(mu_) {
    if (procs_.empty()) {
      RetireCurrentLocked(MonotonicNs());
      return 0;
    }
    // Without the proc connector this is how new threads are found.
    if (!proc_events_) {
      for (auto& [tgid, p] : procs_) RescanLocked(tgid, p);
    }
    int err = 0;
    for (const std::string& filter : CandidateFiltersLocked()) {
      if (current_ != 0 && filter == current_filter_) return 0;
      err = InstallLocked(filter);
      if (err != EINVAL && err != E2BIG) return err;  // 0, or hopeless
    }
    return err;
  }

  int InstallLocked(const std::string& filter) REQUIRES(mu_) {
    const uint64_t g = next_generation_++;
    std::weak_ptr<SignalWatchers> weak = weak_from_this();
    int err = 0;
    std::shared_ptr<SignalTrace> trace = SignalTrace::Open(
        reactor_, filter,
        [weak, g](const std::vector<SignalSample>& samples) {
          if (auto self = weak.lock()) self->OnSamples(g, samples);
        },
        &err);
    if (!trace) return err;
    // Samples it drains before this point wait for mu_, then find the window.
    const uint64_t handover = MonotonicNs();
    generations_[g] = Generation{std::move(trace), handover, UINT64_MAX};
    RetireCurrentLocked(handover);
    current_ = g;
    current_filter_ = filter;
    if (proc_events_ && subscription_ == 0) {
      subscription_ = proc_events_->Subscribe(
          [weak](const ProcEvent& e) {
            if (auto self = weak.lock()) self->OnProcEvent(e);
          },
          [weak] {
            if (auto self = weak.lock()) self->OnProcOverflow();
          });
    }
    return 0;
  }

  void RetireCurrentLocked(uint64_t handover) REQUIRES(mu_) {
    if (current_ == 0) return;
    Generation& old = generations_[current_];
    old.until_ns = handover;
    old.trace->Enable(false);
    const uint64_t g = current_;
    current_ = 0;
    current_filter_.clear();
    std::weak_ptr<SignalWatchers> weak = weak_from_this();
    reactor_->AddTimer(Reactor::Clock::kMonotonic,
                       Reactor::Now(Reactor::Clock::kMonotonic) + kRetireDelayNs, [weak, g] {
                         if (auto self = weak.lock()) self->FinishGeneration(g);
                       });
  }

  // On the reactor thread (a timer): the last drain of a retired generation.
  void FinishGeneration(uint64_t g) {
    std::shared_ptr<SignalTrace> trace;
    {
      MutexLock l(mu_);
      auto it = generations_.find(g);
      if (it == generations_.end()) return;
      trace = it->second.trace;
    }
    trace->DrainAll();  // calls OnSamples, which takes mu_
    MutexLock l(mu_);
    generations_.erase(g);
    // `trace` closes when this returns (RemoveFd, munmap, close).
  }

  void ScheduleRebuildLocked() REQUIRES(mu_) {
    if (rebuild_scheduled_) return;
    rebuild_scheduled_ = true;
    std::weak_ptr<SignalWatchers> weak = weak_from_this();
    reactor_->AddTimer(Reactor::Clock::kMonotonic,
                       Reactor::Now(Reactor::Clock::kMonotonic) + kRebuildDelayNs, [weak] {
                         if (auto self = weak.lock()) self->DeferredRebuild();
                       });
  }

  void DeferredRebuild() {
    MutexLock l(mu_);
    rebuild_scheduled_ = false;
    if (int err = RebuildLocked()) {
      // The previous filter stays: only signals it excludes are missed.
      std::fprintf(stderr, "kqueued: EVFILT_SIGNAL: cannot rebuild the trace: %s\n",
                   strerror(err));
    }
  }

  // The process a sample's target thread belongs to, if it is watched.
  bool ResolveLocked(const SignalSample& s, pid_t* tgid_out) REQUIRES(mu_) {
    auto t = thread_tgid_.find(s.pid);
    if (t != thread_tgid_.end()) {
      *tgid_out = t->second;
      return true;
    }
    auto x = exited_.find(s.pid);
    if (x != exited_.end() && s.time_ns <= x->second.at_ns && procs_.count(x->second.tgid)) {
      *tgid_out = x->second.tgid;  // sent before its exit was processed
      return true;
    }
    if (s.group != 0) return false;  // kill() names the leader, known if watched
    // A thread-directed signal to a thread we do not know: perhaps one
    // created a moment ago in a watched process.
    const pid_t tgid = TgidOf(s.pid);
    auto p = procs_.find(tgid);
    if (p == procs_.end()) return false;
    AddThreadLocked(tgid, p->second, s.pid);
    ScheduleRebuildLocked();
    *tgid_out = tgid;
    return true;
  }

  void OnSamples(uint64_t generation, const std::vector<SignalSample>& samples) {
    std::vector<std::pair<std::weak_ptr<Knote>, long>> counts;
    {
      MutexLock l(mu_);
      auto gen = generations_.find(generation);
      if (gen == generations_.end()) return;
      const uint64_t from = gen->second.from_ns, until = gen->second.until_ns;
      std::map<const Knote*, size_t> index;  // into counts
      std::map<pid_t, bool> exited_check;     // tgid -> its pidfd says exited
      for (const SignalSample& s : samples) {
        if (s.time_ns < from || s.time_ns >= until) continue;  // another generation's
        if (s.sig < 1 || s.sig > kMaxSignalNumber || sig_entries_[s.sig] == 0) continue;
        pid_t tgid;
        if (!ResolveLocked(s, &tgid)) continue;
        auto p = procs_.find(tgid);
        if (p == procs_.end()) continue;
        // Gone, though its exit is not handled yet: the pid may be reused
        // already, so nothing is attributed to it any more. (One poll per
        // process and batch; signals are few.)
        auto [chk, first] = exited_check.emplace(tgid, false);
        if (first) chk->second = PidfdExited(p->second.pidfd.get());
        if (chk->second) {
          DropLocked(p);
          ScheduleRebuildLocked();
          continue;
        }
        for (const Entry& e : p->second.by_sig[s.sig]) {
          if (s.time_ns < e.since_ns) continue;  // sent before the EV_ADD
          auto [pos, fresh] = index.emplace(e.key, counts.size());
          if (fresh) counts.emplace_back(e.kn, 0);
          counts[pos->second].second++;
        }
      }
    }
    for (const auto& [kn, n] : counts) Knote::Notify(kn, n);
  }

  void OnProcEvent(const ProcEvent& e) {
    MutexLock l(mu_);
    switch (e.kind) {
      case ProcEvent::Kind::kFork: {
        if (e.child_pid == e.child_tgid) return;  // a new process: not ours
        auto p = procs_.find(e.child_tgid);
        if (p == procs_.end()) return;
        // Often known already: a /proc scan or a sample found it first.
        if (!AddThreadLocked(e.child_tgid, p->second, e.child_pid)) return;
        break;
      }
      case ProcEvent::Kind::kExit: {
        if (e.pid == e.tgid) return;  // the tgid stays: kill() still names it
        auto p = procs_.find(e.tgid);
        if (p == procs_.end() || p->second.threads.erase(e.pid) == 0) return;
        ForgetThreadLocked(e.tgid, e.pid);
        // Its last signals may still be unread in a ring (the rings and the
        // proc connector are separate queues): remember it a little longer.
        const uint64_t now = MonotonicNs();
        exited_[e.pid] = Exited{e.tgid, now};
        for (auto x = exited_.begin(); x != exited_.end();) {
          x = now - x->second.at_ns > kExitedGraceNs ? exited_.erase(x) : std::next(x);
        }
        break;
      }
      case ProcEvent::Kind::kExec: {
        // exec from a non-leader thread kills the others and takes the
        // leader's id: simplest to look again.
        auto p = procs_.find(e.tgid);
        if (p == procs_.end()) return;
        RescanLocked(e.tgid, p->second);
        break;
      }
      case ProcEvent::Kind::kUid:
      case ProcEvent::Kind::kGid:
        return;  // credentials: not ours
    }
    ScheduleRebuildLocked();
  }

  // Fork and exit events were lost: threads may be missing or stale.
  void OnProcOverflow() {
    MutexLock l(mu_);
    for (auto& [tgid, p] : procs_) RescanLocked(tgid, p);
    ScheduleRebuildLocked();
  }

  Reactor* const reactor_;
  const std::shared_ptr<ProcEvents> proc_events_;  // may be null

  // Guards everything below. Taken under a kqueue's lock (the filter
  // hooks), before the reactor's; knotes are notified without it.
  Mutex mu_;
  std::map<pid_t, Process> procs_ GUARDED_BY(mu_);      // by tgid
  std::map<pid_t, pid_t> thread_tgid_ GUARDED_BY(mu_);  // every thread of procs_ (ordered:
                                        // the filter string is stable)
  std::map<pid_t, Exited> exited_ GUARDED_BY(mu_);      // threads gone in the last 5 s
  int sig_entries_[kMaxSignalNumber + 1] = {};  // knotes per signal number
  std::map<uint64_t, Generation> generations_;  // the current and retiring
  uint64_t current_ = 0;                        // 0: not tracing
  std::string current_filter_;
  uint64_t next_generation_ = 1;
  uint64_t next_serial_ = 1;  // Process::serial
  bool rebuild_scheduled_ = false;
  int trace_error_ = 0;      // ENOTSUP once the kernel said so
  uint64_t subscription_ = 0;  // ProcEvents'
};

class SignalFilter : public FilterOps {
 public:
  explicit SignalFilter(std::shared_ptr<SignalWatchers> watchers)
      : watchers_(std::move(watchers)) {}

  int Attach(Knote& kn) override {
    if (kn.kev.ident < 1 || kn.kev.ident > static_cast<uint64_t>(kMaxSignalNumber)) {
      return EINVAL;
    }
    const int sig = static_cast<int>(kn.kev.ident);
    const pid_t tgid = kn.owner->pid();
    if (int err = watchers_->Add(kn, tgid, sig)) return err;
    kn.state = std::make_unique<SignalState>(tgid, sig);
    return 0;
  }

  void Detach(Knote& kn) override {
    SignalState* st = kn.state_as<SignalState>();
    watchers_->Remove(kn, st->tgid, st->sig);
  }

  // hint > 0: that many signals were sent. The count lives in kn.kev.data
  // (the seed's kn_data++), so the core's EV_CLEAR reset is the filter's.
  bool Event(Knote& kn, long hint) override {
    if (hint > 0) kn.kev.data = SaturatingAdd(kn.kev.data, hint);
    kn.kev.fflags = 0;
    return kn.kev.data > 0;
  }

  uint32_t ImpliedFlags() const override { return EV_CLEAR; }

 private:
  const std::shared_ptr<SignalWatchers> watchers_;
};

}  // namespace

std::shared_ptr<FilterOps> MakeSignalFilter(Runtime* runtime,
                                            std::shared_ptr<ProcEvents> proc_events) {
  auto watchers = std::make_shared<SignalWatchers>(&runtime->reactor(), std::move(proc_events));
  return std::make_shared<SignalFilter>(std::move(watchers));
}

}  // namespace kqd
