// EVFILT_VNODE: changes to the file an fd of the registering process names.
//
// IDENT AND LIFETIME. ident is an fd of kn.owner. Only regular files and
// directories are accepted; the rest is refused with NetBSD's errno: EINVAL
// for pipes, sockets, FIFOs, kqueues and anonymous inodes (eventfd, timerfd,
// pidfd...), whose own kqfilter refuses a filter it does not know there
// (pipe_kqfilter, soo_kqfilter, fifo_kqfilter, kqueue_kqfilter), and
// EOPNOTSUPP for character and block devices (spec_kqfilter) and for
// symlinks opened with O_PATH|O_NOFOLLOW, which NetBSD has no counterpart of.
// O_PATH fds of files and directories are accepted, as FreeBSD documents
// for EVFILT_VNODE.
// The file is watched by inode (daemon/os/inotify_mux.h) and never kept
// open: every look at it goes through a transient copy of the client's fd.
// As for EVFILT_READ/WRITE, a copy whose identity (st_dev, st_ino, st_rdev,
// type, access mode: daemon/os/file_identity.h) differs from the one at
// attach means the fd was closed or its number reused: the knote is dropped
// silently (Knote::kGone), and StillValid tells the core the same.
//
// SEMANTICS (NetBSD's filt_vnode, unchanged since the seed's era): each
// change is posted as a HINT — the set of notes one VOP posts together, e.g.
// NOTE_WRITE|NOTE_EXTEND for an extending write, NOTE_WRITE|NOTE_LINK to a
// directory for mkdir — and a knote takes the WHOLE hint into its fflags if
// any bit of it was asked for (kn_sfflags & hint). So asking for NOTE_WRITE
// alone still reports NOTE_EXTEND with an extending write, exactly as
// NetBSD's own tests expect. fflags accumulate until retrieved; data is 0.
//
// EV_CLEAR IS NOT IMPLIED (NetBSD does not set it for VNODE). Without
// EV_CLEAR, the seed's kqueue_scan puts a retrieved knote back on the queue
// with its fflags intact, so the event is reported again at every kevent()
// — "something happened since registration" — with fflags growing as more
// happens. Programs use EV_CLEAR (every BSD example does), EV_ONESHOT or
// EV_DISPATCH to get one event per batch of changes; that is what they get
// here too.
//
// NOTE_REVOKE (the file's file system went away) sets EV_EOF|EV_ONESHOT and
// always fires (fflags include NOTE_REVOKE only if asked for), as NetBSD's
// genfs filter does. Two Linux sources: IN_UNMOUNT (the superblock shut
// down; in practice only after the client closed its fd), and — the case
// that matters — the fd's mount disappearing from the owner's mount table
// (umount -l, or a forced unmount): fs_filter.h's MountTables tells.
//
// THE MAPPING (inotify event -> NetBSD hint; deltas are from fstat of a
// transient copy against the knote's previous look):
//   regular file
//     IN_MODIFY, size grew            -> WRITE|EXTEND   (write, append)
//     IN_MODIFY, size shrank          -> ATTRIB         (truncate: NetBSD's
//                                         setattr posts ATTRIB[|EXTEND])
//     IN_MODIFY, size unchanged       -> WRITE          (overwrite)
//     IN_ATTRIB, st_nlink now 0       -> DELETE         (last link removed,
//                                         also by rename over it)
//     IN_ATTRIB, st_nlink changed     -> LINK           (link(), or unlink
//                                         of another link: NetBSD 10 posts
//                                         LINK when links remain)
//     IN_ATTRIB, nlink unchanged      -> ATTRIB         (chmod, chown,
//                                         utimes, xattrs); also when mode,
//                                         uid or gid changed with the links
//   directory (events about its entries; their own opens/reads are not)
//     IN_CREATE/IN_DELETE of a file,
//     IN_MOVED_FROM/TO of a file      -> WRITE
//     IN_CREATE/IN_DELETE of a subdir,
//     subdir moved in or out          -> WRITE|LINK
//     subdir renamed within it        -> WRITE
//     IN_ATTRIB                       -> ATTRIB (DELETE if st_nlink is 0)
//     (NOTE_EXTEND is never posted for directories, as in NetBSD 10)
//   both
//     IN_DELETE_SELF                  -> DELETE
//     IN_MOVE_SELF                    -> RENAME
//     IN_OPEN                         -> OPEN
//     IN_CLOSE_NOWRITE                -> CLOSE
//     IN_CLOSE_WRITE                  -> CLOSE_WRITE
//     IN_ACCESS                       -> READ  (read(); readdir on dirs)
//     IN_UNMOUNT, or mount detached   -> REVOKE (EV_EOF|EV_ONESHOT)
//     IN_Q_OVERFLOW (events lost)     -> whatever the fstat deltas show
//
// KNOWN DIFFERENCES. Sizes are compared when the daemon reads the events,
// and inotify merges identical consecutive events: a write and a truncation
// read in one batch count by their net effect on the size. A directory removed while the watching fd is open gets
// no NOTE_DELETE (Linux says IN_DELETE_SELF only at its last close, when the
// knote is gone). ftruncate() that grows a file reads as a write
// (WRITE|EXTEND, NetBSD: ATTRIB|EXTEND); open(O_TRUNC) of an empty file
// reads as an overwrite (WRITE). Close of the daemon's own transient copy
// produces IN_CLOSE only if the client closed its fd meanwhile (the copy
// was then the last reference) — and then the knote is being dropped.
#ifndef KQUEUED_DAEMON_FILTERS_VNODE_VNODE_FILTER_H_
#define KQUEUED_DAEMON_FILTERS_VNODE_VNODE_FILTER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "daemon/core/filter_ops.h"
#include "daemon/core/runtime.h"
#include "daemon/filters/fs/fs_filter.h"
#include "daemon/os/inotify_mux.h"

namespace kqd {

// What the filter remembers of a file between two looks.
struct VnodeStat {
  int64_t size = 0;
  uint64_t nlink = 0;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_ns = 0;
};

// The NetBSD hints for a batch of InotifyMux events on one file. before/now
// are the file's previous and current state, or null if it could not be
// looked at.
std::vector<uint32_t> VnodeHints(uint32_t events, bool dir, const VnodeStat* before,
                                 const VnodeStat* now);

// The inotify mask a knote needs for the notes it asked for.
uint32_t VnodeInotifyMask(uint32_t sfflags, bool dir);

class VnodeFilter : public FilterOps {
 public:
  explicit VnodeFilter(Runtime* runtime);
  ~VnodeFilter() override;
  VnodeFilter(const VnodeFilter&) = delete;
  VnodeFilter& operator=(const VnodeFilter&) = delete;

  bool IsFdFilter() const override { return true; }
  int Attach(Knote& kn) override;
  void Detach(Knote& kn) override;
  bool Event(Knote& kn, long hint) override;
  int Touch(Knote& kn, const kq_kevent& change) override;
  bool StillValid(Knote& kn) override;

  // The shared inotify multiplexer (tests). Null if inotify is unavailable:
  // every EV_ADD then fails with ENOSYS.
  InotifyMux* watch() { return watch_.get(); }
  MountTables& mounts() { return *mounts_; }

 private:
  Reactor* const reactor_;
  const std::shared_ptr<InotifyMux> watch_;
  int64_t watch_token_ = 0;  // watch_'s fd in the reactor
  const std::shared_ptr<MountTables> mounts_;
};

// For the system filter table.
std::shared_ptr<FilterOps> MakeVnodeFilter(Runtime* runtime);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_VNODE_VNODE_FILTER_H_
