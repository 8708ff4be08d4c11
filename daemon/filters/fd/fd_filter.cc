#include "daemon/filters/fd/fd_filter.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "daemon/core/process_context.h"
#include "daemon/filters/fd/fd_readiness.h"
#include "daemon/os/file_identity.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {
namespace {

constexpr long kHintWake = 1;     // the file's wait queue was woken
constexpr long kHintRecheck = 2;  // EVFILT_EMPTY's timer: look again

// EVFILT_EMPTY's re-check delays (fd_filter.h). Short at first: a drain
// takes about a round trip, and AF_UNIX wakes its writer a moment before
// the freed memory is subtracted, so a look right at the wake-up can still
// find a few bytes. The ceiling bounds how late a drain is seen, and the
// cost of a knote that stays non-empty (or EV_CLEAR and idle): 16 looks a
// second.
constexpr int64_t kRecheckMinNs = 1000000;   // 1 ms
constexpr int64_t kRecheckMaxNs = 64000000;  // 64 ms

// One pending reactor timer; dropping it cancels it.
class RecheckTimer {
 public:
  RecheckTimer() = default;
  ~RecheckTimer() { Cancel(); }
  RecheckTimer(const RecheckTimer&) = delete;
  RecheckTimer& operator=(const RecheckTimer&) = delete;

  bool armed() const { return id_ != 0; }
  void Arm(Reactor* reactor, int64_t delay_ns, Reactor::TimerCallback cb) {
    Cancel();
    reactor_ = reactor;
    id_ = reactor->AddTimer(Reactor::Clock::kMonotonic,
                            Reactor::Now(Reactor::Clock::kMonotonic) + delay_ns,
                            std::move(cb));
  }
  // It ran: nothing is left to cancel.
  void Fired() { id_ = 0; }
  void Cancel() {
    if (id_ != 0) reactor_->CancelTimer(id_);
    id_ = 0;
  }

 private:
  Reactor* reactor_ = nullptr;
  uint64_t id_ = 0;
};

// What EVFILT_EMPTY remembers between two looks at a send queue.
struct EmptyWatch {
  RecheckTimer timer;                   // at most one pending re-check
  int64_t interval_ns = kRecheckMinNs;  // delay of the next one
  bool saw_queued = false;              // the last look found bytes queued
  uint64_t acked = 0;                   // SendQueue::acked at the last look
};

struct FdState : KnoteState {
  FileInfo info;
  FdWatcher::Item item;          // epoll item, if any
  FdWatcher::InodeWatch inode;   // inotify subscription, if any
  EmptyWatch empty;              // EVFILT_EMPTY only
  // A copy of the client's fd already checked to be the registered file,
  // made by a hook of the current change (Attach, StillValid) for the next
  // one (the evaluation, Detach), under the same kqueue lock: spares a
  // second copy and check. Consumed by that hook, or closed by ChangeDone.
  ScopedFd copy;
  // The new epoll item's events as the drain of its add report found them
  // (FdWatcher::Watch), for the registration's evaluation instead of a
  // poll(); -1 once used, or when not known or not the evaluation's poll.
  int add_revents = -1;
  // Pipe EVFILT_READ: the hang-up state the last evaluation found
  // (KnownPoll::hup), for a level re-check that then needs FIONREAD alone;
  // -1: unknown (no evaluation yet, or one that could not look).
  int hup = -1;
};

int Fd(const Knote& kn) { return static_cast<int>(kn.kev.ident); }

}  // namespace

FdFilter::FdFilter(Runtime* runtime, uint32_t filter)
    : filter_(filter),
      reactor_(&runtime->reactor()),
      // Only EVFILT_READ watches regular files (WRITE on them is always
      // ready), so only it needs an inotify instance.
      watcher_(FdWatcher::Create(&runtime->reactor(), filter == EVFILT_READ)) {}

int FdFilter::Attach(Knote& kn) {
  int err = 0;
  // DupFd refuses our own device (EOPNOTSUPP): only then can it be a kqueue.
  // The device check's statx is the file's identity too: one statx.
  struct statx stx;
  ScopedFd copy = kn.owner->DupFdStat(Fd(kn), &stx, &err);
  if (!copy && err == EOPNOTSUPP && kn.owner->KqueueForFd(Fd(kn))) {
    // A kqueue supports EVFILT_READ only (BSD's kqueue_kqfilter). The knote
    // is handed to the kqueue's own ops, once: the core calls kn.ops.
    if (!read()) return EINVAL;
    if (int e = nested_.Attach(kn)) return e;
    kn.ops = &nested_;
    return 0;
  }
  if (!copy) return err != 0 ? err : EBADF;
  auto st = std::make_unique<FdState>();
  if (int e = DescribeFile(copy.get(), stx, &st->info)) return e;
  // Only sockets implement EVFILT_EMPTY on FreeBSD and NetBSD; the
  // kqfilter of pipes, vnodes, ttys... answers EINVAL to it.
  if (empty() && st->info.kind != FileKind::kSocket) return EINVAL;
  // NetBSD's pipe_kqfilter hangs EVFILT_WRITE on the pipe's peer and
  // refuses it with EBADF when that side is already closed (no reader for
  // a write end, no writer for a read end). FIFOs are fifofs sockets there
  // and attach, reporting EV_EOF; a peer that goes later is EV_EOF too.
  if (!read() && !empty() && st->info.kind == FileKind::kPipe &&
      IsAnonymousPipe(copy.get()) && PipePeerGone(copy.get(), st->info)) {
    return EBADF;
  }

  std::weak_ptr<Knote> weak = kn.weak_from_this();
  auto wake = [weak] { Knote::Notify(weak, kHintWake); };
  {
    if (st->info.kind == FileKind::kRegular) {
      if (read()) {
        if (int e = watcher_->WatchInode(copy.get(), wake, &st->inode)) return e;
      }
    } else {
      // Per filter, so that a READ knote is not woken by every ACK that
      // frees send space, nor a WRITE knote by every arriving packet.
      // EPOLLERR and EPOLLHUP are always reported: READ on a pipe's write
      // end hears the last reader go (EPOLLERR), WRITE on its read end the
      // last writer (EPOLLHUP). EVFILT_EMPTY takes the write-space wake-ups
      // too (a reset comes as EPOLLERR).
      const uint32_t events = read() ? (EPOLLIN | EPOLLRDHUP | EPOLLPRI) : EPOLLOUT;
      const FdWatcher::InodeKey inode{st->info.id.dev, st->info.id.ino};
      int revents = -1;
      int e = watcher_->Watch(copy.get(), inode, events, wake, &st->item, &revents);
      // The item's events are what the evaluation would poll for: pipes'
      // (either filter) and sockets' EVFILT_READ (fd_readiness.h).
      if (e == 0 && !empty() &&
          (st->info.kind == FileKind::kPipe || (read() && st->info.kind == FileKind::kSocket)))
        st->add_revents = revents;
      if (e == EPERM) {
        st->info.kind = FileKind::kUnpollable;  // no poll: always ready
      } else if (e != 0) {
        return e;
      }
    }
  }
  st->copy = std::move(copy);
  kn.state = std::move(st);
  // The registration's evaluation follows at once and closes the copy:
  // nothing of the client's file is kept after it.
  return 0;
}

void FdFilter::Detach(Knote& kn) {
  auto* st = kn.state_as<FdState>();
  if (st == nullptr) return;
  st->empty.timer.Cancel();
  // The last subscriber of an item deletes it with a copy of the same open
  // file (the watcher checks it); without one, the item has vanished with
  // the file or is a harmless zombie (fd_watch.h).
  watcher_->Unwatch(st->item, [&kn, st]() {
    if (kn.status & Knote::kGone) return ScopedFd();
    if (st->copy) return std::move(st->copy);  // StillValid's, this change
    int err = 0;
    return kn.owner->CopyFd(Fd(kn), &err);
  });
  st->copy.reset();
  watcher_->UnwatchInode(st->inode);
}

ScopedFd FdFilter::CopyIfSame(Knote& kn, bool* gone) {
  auto* st = kn.state_as<FdState>();
  if (st->copy) {
    *gone = false;
    return std::move(st->copy);  // checked earlier in this change
  }
  int err = 0;
  ScopedFd copy = kn.owner->CopyFd(Fd(kn), &err);
  if (!copy) {
    // Surely gone (closed, process gone) rather than just not obtainable
    // right now (e.g. EMFILE in the daemon)?
    *gone = err == 0 || err == EBADF || err == ESRCH;
    return ScopedFd();
  }
  bool same;
  if (st->item.file != 0) {
    // The very open file of the epoll item: one kcmp. Checked before the
    // copy is used at all, so a number reused by our own device is never
    // polled.
    same = watcher_->IsSameFile(st->item, copy.get());
  } else {
    // No item to compare with (regular files, files epoll refuses): the
    // inode, its type and the access mode (fd_readiness.h).
    FileIdentity now;
    same = ReadIdentity(copy.get(), &now) == 0 && now == st->info.id;
  }
  *gone = !same;
  if (!same) return ScopedFd();
  return copy;
}

bool FdFilter::Event(Knote& kn, long hint) {
  // Every wake is a real evaluation: the core trusts an evaluation made
  // during a kevent call and does not repeat it at collection (one
  // evaluation per wake), so answering "still true" without looking would
  // report stale data and miss EV_EOF.
  auto* st = kn.state_as<FdState>();
  if (hint == kHintRecheck) st->empty.timer.Fired();
  bool gone = false;
  ScopedFd copy = CopyIfSame(kn, &gone);
  if (!copy) {
    st->add_revents = -1;
    st->hup = -1;  // a wake-up may go unevaluated: the next look polls
    if (gone) {
      kn.status |= Knote::kGone;  // closed: dropped silently, as on BSD
      return false;
    }
    // Cannot look now: no change. EVFILT_EMPTY, which may have nothing
    // else to prompt it, looks again later.
    if (empty()) ScheduleRecheck(kn);
    return (kn.status & Knote::kActive) != 0;
  }
  if (empty()) return EmptyEvent(kn, copy.get(), hint);
  KnownPoll known;
  known.revents = st->add_revents;
  st->add_revents = -1;
  // A wake-up is looked at in full (it may be the hang-up); the core's own
  // looks (EV_ADD, the level re-check at collection) come after every
  // wake-up of the file recorded before them was evaluated (the catch-up
  // before a scan), so the hang-up state found last still holds. Only
  // with an epoll item: it is what hears of the wake-ups.
  if (hint == kHintEvaluate && st->item.file != 0) known.hup = st->hup;
  const Readiness r = read() ? ReadReadiness(copy.get(), st->info, kn.sfflags, kn.sdata, known)
                             : WriteReadiness(copy.get(), st->info, kn.sfflags, kn.sdata, known);
  st->hup = r.hup;
  kn.kev.data = r.data;
  kn.kev.fflags = r.fflags;
  if (r.eof) {
    kn.kev.flags |= EV_EOF;
  } else {
    kn.kev.flags &= ~EV_EOF;
  }
  return r.fire;
}

bool FdFilter::EmptyEvent(Knote& kn, int fd, long hint) {
  auto* st = kn.state_as<FdState>();
  EmptyWatch& w = st->empty;
  const SendQueue q = ReadSendQueue(fd, st->info);
  // Whether the queue drained since the last look: bytes were queued then,
  // or TCP has acknowledged more since (a write and its ACK between two
  // looks), or the socket woke us and its wake-ups mean freed send memory.
  // A TCP socket's EPOLLOUT means a full buffer regained room, or is the
  // report epoll makes when the item is added: no drain by itself.
  const bool drained = w.saw_queued || q.acked != w.acked ||
                       (hint == kHintWake && !q.drains_silently);
  const bool was_queued = w.saw_queued;
  w.saw_queued = q.bytes > 0;
  w.acked = q.acked;
  // BSD reports sbused(&so_snd) in data, which is 0 whenever the event
  // holds, and never EV_EOF or fflags.
  kn.kev.data = 0;
  kn.kev.fflags = 0;
  kn.kev.flags &= ~EV_EOF;
  bool fire;
  if (q.bytes > 0) {
    fire = false;
    if (!was_queued) w.interval_ns = kRecheckMinNs;  // a new wait: look soon
  } else {
    // An EV_CLEAR knote fires once per drain, as BSD's fires on the wake-up
    // of the ACK that empties the buffer — not whenever a look finds the
    // queue still empty. Other knotes, and every look of the core (EV_ADD,
    // collection), report the state.
    fire = hint == kHintEvaluate || !(kn.kev.flags & EV_CLEAR) || drained;
    if (fire) w.interval_ns = kRecheckMinNs;
  }
  if (q.bytes > 0 || (q.drains_silently && (kn.kev.flags & EV_CLEAR)))
    ScheduleRecheck(kn);
  return fire;
}

void FdFilter::ScheduleRecheck(Knote& kn) {
  EmptyWatch& w = kn.state_as<FdState>()->empty;
  if (w.timer.armed()) return;
  std::weak_ptr<Knote> weak = kn.weak_from_this();
  w.timer.Arm(reactor_, w.interval_ns, [weak] { Knote::Notify(weak, kHintRecheck); });
  w.interval_ns = std::min(2 * w.interval_ns, kRecheckMaxNs);
}

bool FdFilter::StillValid(Knote& kn) {
  bool gone = false;
  ScopedFd copy = CopyIfSame(kn, &gone);
  if (!copy) return !gone;
  // For the evaluation or Detach this change makes next; ChangeDone
  // closes it if neither does.
  kn.state_as<FdState>()->copy = std::move(copy);
  return true;
}

void FdFilter::ChangeDone(Knote& kn) {
  if (auto* st = kn.state_as<FdState>()) st->copy.reset();
}

std::shared_ptr<FilterOps> MakeFdFilter(Runtime* runtime, uint32_t filter) {
  return std::make_shared<FdFilter>(runtime, filter);
}

}  // namespace kqd
