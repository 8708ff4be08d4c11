#include "daemon/filters/vnode/vnode_filter.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <utility>

#include "daemon/core/process_context.h"
#include "daemon/os/file_identity.h"
#include "daemon/util/scoped_fd.h"

#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif

namespace kqd {
namespace {

using W = InotifyMux;

// Our own hint, beside InotifyMux's event bits: the owner's mount table
// lost a mount; check whether it was the file's (NOTE_REVOKE).
constexpr long kHintMountGone = 1L << 24;
static_assert(kHintMountGone > 2L * InotifyMux::kOverflow, "distinct from InotifyMux's bits");

constexpr uint32_t kDirEntryMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;

struct VnodeState : KnoteState {
  FileIdentity id;
  bool dir = false;
  uint32_t mask = 0;  // inotify mask of `sub`
  W::Subscription sub;
  MountTables::Subscription mounts;
  uint64_t mount_id = 0;
  std::string mount_identity;  // "": unknown, no revoke from the mount table
  VnodeStat last;
  bool revoked = false;
};

int Fd(const Knote& kn) { return static_cast<int>(kn.kev.ident); }

VnodeStat StatOf(const struct stat& st) {
  VnodeStat s;
  s.size = st.st_size;
  s.nlink = st.st_nlink;
  s.mode = st.st_mode;
  s.uid = st.st_uid;
  s.gid = st.st_gid;
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return s;
}

// fstat + the identity file_identity.h defines, in one look. 0 or an errno.
int Look(int fd, struct stat* st, FileIdentity* id) {
  if (fstat(fd, st) != 0) return errno;
  const int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return errno;
  id->dev = st->st_dev;
  id->ino = st->st_ino;
  id->rdev = st->st_rdev;
  id->type = st->st_mode & S_IFMT;
  id->accmode = fl & O_ACCMODE;
  return 0;
}

// A transient copy of the knote's fd if it still names the attached file,
// with its stat. Otherwise invalid, *gone telling whether the file is surely
// no longer there (closed, reused, process gone) rather than just not
// obtainable now (e.g. EMFILE in the daemon).
ScopedFd CopyIfSame(const Knote& kn, const FileIdentity& want, struct stat* st, bool* gone) {
  int err = 0;
  ScopedFd copy = kn.owner->DupFd(Fd(kn), &err);
  if (!copy) {
    *gone = err == 0 || err == EBADF || err == ESRCH;
    return ScopedFd();
  }
  FileIdentity now;
  if (Look(copy.get(), st, &now) != 0 || now != want) {
    *gone = true;
    return ScopedFd();
  }
  *gone = false;
  return copy;
}

// eventfd, timerfd, pidfd... may show S_IFREG on some kernels; they are not
// files anyone can change.
bool IsAnonInode(int fd) {
  char path[64], link[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(path, link, sizeof link - 1);
  if (n < 0) return false;
  link[n] = '\0';
  return strncmp(link, "anon_inode:", 11) == 0;
}

// The mount ID of the open file (mountinfo's first field), or 0.
uint64_t MountIdOf(int fd) {
  struct statx sx;
  if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &sx) != 0) return 0;
  return (sx.stx_mask & STATX_MNT_ID) ? sx.stx_mnt_id : 0;
}

W::Callback WakeFor(Knote& kn) {
  std::weak_ptr<Knote> weak = kn.weak_from_this();
  // The events are never 0 (kHintEvaluate).
  return [weak](uint32_t events) { Knote::Notify(weak, static_cast<long>(events)); };
}

// A knote takes the whole hint if it asked for any of it (filt_vnode).
void Apply(Knote& kn, const std::vector<uint32_t>& hints) {
  for (uint32_t h : hints) {
    if (kn.sfflags & h) kn.kev.fflags |= h;
  }
}

}  // namespace

uint32_t VnodeInotifyMask(uint32_t s, bool dir) {
  // IN_DELETE_SELF keeps the mask non-empty (inotify refuses 0) and costs
  // nothing: it comes at most once.
  uint32_t m = IN_DELETE_SELF;
  if (dir) {
    if (s & (NOTE_WRITE | NOTE_LINK)) m |= kDirEntryMask;
    if (s & (NOTE_ATTRIB | NOTE_DELETE)) m |= IN_ATTRIB;
  } else {
    // Truncation posts NOTE_ATTRIB; link-count changes come as IN_ATTRIB.
    if (s & (NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB)) m |= IN_MODIFY;
    if (s & (NOTE_ATTRIB | NOTE_LINK | NOTE_DELETE)) m |= IN_ATTRIB;
  }
  if (s & NOTE_RENAME) m |= IN_MOVE_SELF;
  if (s & NOTE_OPEN) m |= IN_OPEN;
  if (s & NOTE_CLOSE) m |= IN_CLOSE_NOWRITE;
  if (s & NOTE_CLOSE_WRITE) m |= IN_CLOSE_WRITE;
  if (s & NOTE_READ) m |= IN_ACCESS;
  return m;
}

std::vector<uint32_t> VnodeHints(uint32_t ev, bool dir, const VnodeStat* before,
                                 const VnodeStat* now) {
  std::vector<uint32_t> hints;
  const bool known = before != nullptr && now != nullptr;
  const bool lost = (ev & W::kOverflow) != 0;  // events lost: go by the deltas

  if (!dir && (ev & W::kModify || lost)) {
    if (known && now->size > before->size) {
      hints.push_back(NOTE_WRITE | NOTE_EXTEND);
    } else if (known && now->size < before->size) {
      hints.push_back(NOTE_ATTRIB);  // truncation: NetBSD's setattr hint
    } else if (ev & W::kModify || (known && now->mtime_ns != before->mtime_ns)) {
      hints.push_back(NOTE_WRITE);
    }
  }
  if (ev & W::kAttrib || lost) {
    const bool links = known && now->nlink != before->nlink;
    const bool attrs = known && (now->mode != before->mode || now->uid != before->uid ||
                                 now->gid != before->gid);
    if (links && now->nlink == 0) {
      hints.push_back(NOTE_DELETE);
    } else if (links && !dir) {
      hints.push_back(NOTE_LINK);
    } else if (links && lost) {
      hints.push_back(NOTE_WRITE | NOTE_LINK);  // subdirectories came or went
    }
    if (attrs || (ev & W::kAttrib && !links)) hints.push_back(NOTE_ATTRIB);
  }
  if (dir) {
    if (ev & (W::kEntryChanged | W::kSubdirRenamed)) hints.push_back(NOTE_WRITE);
    if (ev & W::kSubdirLinked) hints.push_back(NOTE_WRITE | NOTE_LINK);
    if (lost && known && now->mtime_ns != before->mtime_ns) hints.push_back(NOTE_WRITE);
  }
  if (ev & W::kDeleteSelf) hints.push_back(NOTE_DELETE);
  if (ev & W::kMoveSelf) hints.push_back(NOTE_RENAME);
  if (ev & W::kOpen) hints.push_back(NOTE_OPEN);
  if (ev & W::kCloseNoWrite) hints.push_back(NOTE_CLOSE);
  if (ev & W::kCloseWrite) hints.push_back(NOTE_CLOSE_WRITE);
  if (ev & W::kAccess) hints.push_back(NOTE_READ);
  return hints;
}

VnodeFilter::VnodeFilter(Runtime* runtime)
    : reactor_(&runtime->reactor()),
      watch_(InotifyMux::Create()),
      mounts_(MountTables::Create(&runtime->reactor(), &runtime->limits())) {
  if (!watch_) return;
  std::weak_ptr<InotifyMux> weak = watch_;
  watch_token_ = reactor_->AddFd(watch_->inotify_fd(), EPOLLIN, [weak](uint32_t) {
    if (auto w = weak.lock()) w->OnReadable();
  });
}

VnodeFilter::~VnodeFilter() {
  if (watch_token_ > 0) reactor_->RemoveFd(watch_->inotify_fd(), watch_token_);
}

int VnodeFilter::Attach(Knote& kn) {
  if (!watch_ || watch_token_ <= 0) return ENOSYS;
  // Only files and directories have vnode events. The errno for the rest
  // follows NetBSD: its pipe, socket, FIFO, kqueue and eventfd/timerfd
  // kqfilters answer EINVAL for a filter they do not know; devices (and
  // what NetBSD has no counterpart for, an O_PATH symlink) EOPNOTSUPP.
  if (kn.owner->KqueueForFd(Fd(kn))) return EINVAL;
  int err = 0;
  ScopedFd copy = kn.owner->DupFd(Fd(kn), &err);
  if (!copy) return err != 0 ? err : EBADF;
  auto st = std::make_unique<VnodeState>();
  struct stat sb;
  if (int e = Look(copy.get(), &sb, &st->id)) return e;
  if (st->id.type == S_IFIFO || st->id.type == S_IFSOCK) return EINVAL;
  // eventfd, timerfd, pidfd... (mode 0 or S_IFREG, depending on the kernel)
  if ((st->id.type == 0 || st->id.type == S_IFREG) && IsAnonInode(copy.get())) return EINVAL;
  if (st->id.type != S_IFREG && st->id.type != S_IFDIR) return EOPNOTSUPP;
  // An O_PATH descriptor can be had for a file one cannot read; watching
  // through it would report another user's activity on a file inotify
  // refuses the caller. Demand what inotify demands: read permission, as
  // the caller (issue 12 item 6).
  const int fl = fcntl(copy.get(), F_GETFL);
  if (fl >= 0 && (fl & O_PATH)) {
    if (int e = kn.owner->CheckReadAccess(copy.get())) return e == ESRCH ? ESRCH : EACCES;
  }
  st->dir = st->id.type == S_IFDIR;
  st->last = StatOf(sb);

  st->mask = VnodeInotifyMask(kn.sfflags, st->dir);
  if (int e = watch_->Subscribe(copy.get(), st->mask, WakeFor(kn), &st->sub)) {
    return e == ENOSPC ? ENOMEM : e;  // the user's inotify watch limit
  }
  // Revocation by unmount is seen in the owner's mount table. Without it
  // (no /proc for the owner) the knote still works, minus that.
  std::weak_ptr<Knote> weak = kn.weak_from_this();
  auto on_mounts = [weak](uint32_t vq) {
    if (vq & kFsVqUnmount) Knote::Notify(weak, kHintMountGone);
  };
  if (mounts_->Subscribe(kn.owner->pid(), kn.owner->euid(), on_mounts, &st->mounts) == 0) {
    st->mount_id = MountIdOf(copy.get());
    // "" if the fd's mount is not in the owner's namespace (an fd received
    // from another namespace): then it is never taken for unmounted.
    if (st->mount_id != 0) st->mount_identity = mounts_->MountIdentity(st->mounts, st->mount_id);
  }
  kn.state = std::move(st);
  return 0;  // `copy` closes here: nothing of the client's file is kept
}

void VnodeFilter::Detach(Knote& kn) {
  auto* st = kn.state_as<VnodeState>();
  if (st == nullptr) return;
  // With a copy of the file the kernel mask can be narrowed for the knotes
  // that remain on it; without, it just stays larger.
  ScopedFd copy;
  if (!(kn.status & Knote::kGone) && st->sub.wd >= 0) {
    struct stat sb;
    bool gone = true;
    copy = CopyIfSame(kn, st->id, &sb, &gone);
  }
  watch_->Unsubscribe(st->sub, copy ? copy.get() : -1);
  mounts_->Unsubscribe(&st->mounts);
}

bool VnodeFilter::Event(Knote& kn, long hint) {
  auto* st = kn.state_as<VnodeState>();
  struct stat sb;
  bool gone = false;
  ScopedFd copy = CopyIfSame(kn, st->id, &sb, &gone);
  if (!copy && gone) {
    kn.status |= Knote::kGone;  // closed: dropped silently, as on BSD
    return false;
  }
  kn.kev.data = 0;
  if (hint == kHintEvaluate) return kn.kev.fflags != 0 || st->revoked;

  bool revoke = false;
  if (hint == kHintMountGone) {
    // Our file's mount left the owner's namespace (umount -l, forced
    // unmount): BSD's revoke on unmount.
    revoke = copy && !st->mount_identity.empty() &&
             mounts_->MountIdentity(st->mounts, st->mount_id) != st->mount_identity;
  } else {
    const uint32_t events = static_cast<uint32_t>(hint);
    VnodeStat now;
    if (copy) now = StatOf(sb);
    Apply(kn, VnodeHints(events, st->dir, &st->last, copy ? &now : nullptr));
    if (copy) {
      // A regular file's size moves its baseline only with the events that
      // concern it (and links and attributes theirs): an IN_ATTRIB read
      // after a truncation but before the truncation's IN_MODIFY must not
      // swallow the size change, which that IN_MODIFY then reports.
      const bool lost = (events & W::kOverflow) != 0;
      if (st->dir || lost || (events & W::kModify)) {
        st->last.size = now.size;
        st->last.mtime_ns = now.mtime_ns;
      }
      if (st->dir || lost || (events & W::kAttrib)) {
        st->last.nlink = now.nlink;
        st->last.mode = now.mode;
        st->last.uid = now.uid;
        st->last.gid = now.gid;
      }
    }
    revoke = (events & W::kUnmount) != 0;
    if (!revoke && (events & W::kIgnored) && copy) {
      // The kernel dropped the watch while the file is still open to the
      // client: watch it afresh (a new wd), so later changes still count.
      W::Subscription fresh;
      if (watch_->Subscribe(copy.get(), st->mask, WakeFor(kn), &fresh) == 0) st->sub = fresh;
    }
  }
  if (revoke && !st->revoked) {
    st->revoked = true;
    if (kn.sfflags & NOTE_REVOKE) kn.kev.fflags |= NOTE_REVOKE;
    // Nothing more can happen to a revoked vnode: report it once, with EOF.
    kn.kev.flags |= EV_EOF | EV_ONESHOT;
  }
  return kn.kev.fflags != 0 || st->revoked;
}

int VnodeFilter::Touch(Knote& kn, const kq_kevent& change) {
  kn.sfflags = change.fflags;
  kn.sdata = change.data;
  auto* st = kn.state_as<VnodeState>();
  const uint32_t mask = VnodeInotifyMask(kn.sfflags, st->dir);
  if (mask == st->mask) return 0;
  struct stat sb;
  bool gone = false;
  ScopedFd copy = CopyIfSame(kn, st->id, &sb, &gone);
  if (!copy) return 0;  // Event drops it (gone) or a later touch retries
  // Subscribe first, then leave the old subscription: the inode's watch is
  // never removed in between, and the kernel mask ends up the union of
  // what the remaining knotes want.
  W::Subscription fresh;
  if (int e = watch_->Subscribe(copy.get(), mask, WakeFor(kn), &fresh)) {
    return e == ENOSPC ? ENOMEM : e;
  }
  watch_->Unsubscribe(st->sub, copy.get());
  st->sub = fresh;
  st->mask = mask;
  return 0;
}

bool VnodeFilter::StillValid(Knote& kn) {
  auto* st = kn.state_as<VnodeState>();
  struct stat sb;
  bool gone = false;
  ScopedFd copy = CopyIfSame(kn, st->id, &sb, &gone);
  return copy.valid() || !gone;
}

std::shared_ptr<FilterOps> MakeVnodeFilter(Runtime* runtime) {
  return std::make_shared<VnodeFilter>(runtime);
}

}  // namespace kqd
