#include "daemon/filters/fd_filter.h"

#include <errno.h>
#include <sys/epoll.h>

#include <utility>

#include "daemon/core/process_context.h"
#include "daemon/filters/fd_readiness.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {
namespace {

constexpr long kHintWake = 1;  // the file's wait queue was woken

struct FdState : KnoteState {
  FileInfo info;
  FdWatcher::Item item;          // epoll item, if any
  FdWatcher::InodeWatch inode;   // inotify subscription, if any
};

int Fd(const Knote& kn) { return static_cast<int>(kn.kev.ident); }

// A transient copy of the knote's fd if it still names the file the knote
// was attached to. Otherwise an invalid ScopedFd, with *gone telling whether
// the file is surely no longer there (closed, number reused, process gone)
// rather than just not obtainable right now (e.g. EMFILE in the daemon).
ScopedFd CopyIfSame(const Knote& kn, const FileIdentity& id, bool* gone) {
  int err = 0;
  ScopedFd copy = kn.owner->DupFd(Fd(kn), &err);
  if (!copy) {
    *gone = err == 0 || err == EBADF || err == ESRCH;
    return ScopedFd();
  }
  FileIdentity now;
  if (ReadIdentity(copy.get(), &now) != 0 || now != id) {
    *gone = true;
    return ScopedFd();
  }
  *gone = false;
  return copy;
}

}  // namespace

FdFilter::FdFilter(Runtime* runtime, uint32_t filter)
    : filter_(filter),
      // Only EVFILT_READ watches regular files (WRITE on them is always
      // ready), so only it needs an inotify instance.
      watcher_(FdWatcher::Create(&runtime->reactor(), filter == EVFILT_READ)) {}

int FdFilter::Attach(Knote& kn) {
  if (kn.owner->KqueueForFd(Fd(kn))) {
    // A kqueue supports EVFILT_READ only (BSD's kqueue_kqfilter).
    return read() ? nested_.Attach(kn) : EINVAL;
  }
  int err = 0;
  ScopedFd copy = kn.owner->DupFd(Fd(kn), &err);
  if (!copy) return err != 0 ? err : EBADF;
  auto st = std::make_unique<FdState>();
  if (int e = DescribeFile(copy.get(), &st->info)) return e;

  std::weak_ptr<Knote> weak = kn.weak_from_this();
  auto wake = [weak] { Knote::Notify(weak, kHintWake); };
  if (CanEverFire(st->info, read())) {
    if (st->info.kind == FileKind::kRegular) {
      if (read()) {
        if (int e = watcher_->WatchInode(copy.get(), wake, &st->inode)) return e;
      }
    } else {
      // Per filter, so that a READ knote is not woken by every ACK that
      // frees send space, nor a WRITE knote by every arriving packet.
      // EPOLLERR and EPOLLHUP are always reported.
      const uint32_t events = read() ? (EPOLLIN | EPOLLRDHUP | EPOLLPRI) : EPOLLOUT;
      const FdWatcher::InodeKey inode{st->info.id.dev, st->info.id.ino};
      int e = watcher_->Watch(copy.get(), inode, events, wake, &st->item);
      if (e == EPERM) {
        st->info.kind = FileKind::kUnpollable;  // no poll: always ready
      } else if (e != 0) {
        return e;
      }
    }
  }
  kn.state = std::move(st);
  return 0;  // `copy` closes here: nothing of the client's file is kept
}

void FdFilter::Detach(Knote& kn) {
  if (KqueueReadFilter::Owns(kn)) {
    nested_.Detach(kn);
    return;
  }
  auto* st = kn.state_as<FdState>();
  if (st == nullptr) return;
  if (st->item.token != 0) {
    // With the same file we can delete the item; without it, the item has
    // vanished with the file or is a harmless zombie (fd_watch.h).
    ScopedFd copy;
    bool gone = true;
    if (!(kn.status & Knote::kGone)) copy = CopyIfSame(kn, st->info.id, &gone);
    watcher_->Unwatch(st->item, copy ? copy.get() : -1);
  }
  watcher_->UnwatchInode(st->inode);
}

bool FdFilter::Event(Knote& kn, long hint) {
  if (KqueueReadFilter::Owns(kn)) return nested_.Event(kn, hint);
  // A wake-up of a knote that is queued anyway and will be re-evaluated
  // when collected (level-triggered, not EV_ONESHOT) changes nothing: spare
  // a busy socket the copy and the ioctls for every packet.
  if (hint == kHintWake && (kn.status & Knote::kQueued) &&
      !(kn.kev.flags & (EV_CLEAR | EV_ONESHOT)))
    return true;
  auto* st = kn.state_as<FdState>();
  bool gone = false;
  ScopedFd copy = CopyIfSame(kn, st->info.id, &gone);
  if (!copy) {
    if (gone) {
      kn.status |= Knote::kGone;  // closed: dropped silently, as on BSD
      return false;
    }
    return (kn.status & Knote::kActive) != 0;  // cannot look now: no change
  }
  const Readiness r = read() ? ReadReadiness(copy.get(), st->info, kn.sfflags, kn.sdata)
                             : WriteReadiness(copy.get(), st->info, kn.sfflags, kn.sdata);
  kn.kev.data = r.data;
  kn.kev.fflags = r.fflags;
  if (r.eof) {
    kn.kev.flags |= EV_EOF;
  } else {
    kn.kev.flags &= ~EV_EOF;
  }
  return r.fire;
}

bool FdFilter::StillValid(Knote& kn) {
  if (KqueueReadFilter::Owns(kn)) return nested_.StillValid(kn);
  auto* st = kn.state_as<FdState>();
  bool gone = false;
  ScopedFd copy = CopyIfSame(kn, st->info.id, &gone);
  return copy.valid() || !gone;
}

std::shared_ptr<FilterOps> MakeFdFilter(Runtime* runtime, uint32_t filter) {
  return std::make_shared<FdFilter>(runtime, filter);
}

}  // namespace kqd
