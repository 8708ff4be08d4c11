// EVFILT_FS: mount table changes, and the mount-table watcher it shares
// with EVFILT_VNODE (NOTE_REVOKE on a detached mount).
//
// NETBSD. EVFILT_FS (NetBSD 10, vfs_syscalls.c) reports that a file system
// was mounted or unmounted anywhere: ident is ignored (0 by convention),
// EV_CLEAR is set automatically, data is 0, and fflags accumulate the hint
// of each change — VQ_MOUNT (0x1) after every successful mount(2) (updates
// and remounts included) and VQ_UNMOUNT (0x2) after every unmount(2) —
// whatever fflags were given at registration (filt_fs ignores kn_sfflags).
// The values are NetBSD's, VQ_MOUNT / VQ_UNMOUNT in the ABI header.
//
// HERE. Linux has one mount table per mount namespace, so "anywhere" means
// the namespace of the process that registered the knote. The kernel marks
// /proc/<pid>/mountinfo POLLPRI|POLLERR whenever that namespace's table
// changes; a MountNamespace keeps that file open (one per namespace, shared
// by every knote whose owner lives there: keyed by the inode of
// /proc/<pid>/ns/mnt), re-reads it on each wake-up and compares it with the
// previous snapshot, by mount ID:
//   * an ID that appeared                       -> VQ_MOUNT
//   * an ID that vanished                       -> VQ_UNMOUNT
//   * an ID whose device or root changed (the ID was freed and reused
//     between two reads)                         -> VQ_UNMOUNT | VQ_MOUNT
//   * an ID whose line otherwise changed (remount, propagation change,
//     mount --move: all mount(2) calls)          -> VQ_MOUNT
// Several changes between two reads come as one wake-up: one event with the
// union, as NetBSD would have accumulated them before retrieval. A mount
// that came and went between two reads leaves no trace in the table and is
// not reported: the kernel's change count cannot tell it from a second
// wake-up for one change (it is bumped more than once by some operations).
// The daemon reads the table within a wake-up of the change, so that takes
// a mount living well under a millisecond.
#ifndef KQUEUED_DAEMON_FILTERS_FS_FS_FILTER_H_
#define KQUEUED_DAEMON_FILTERS_FS_FS_FILTER_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "daemon/core/filter_ops.h"
#include "daemon/core/reactor.h"
#include "daemon/core/runtime.h"
#include "daemon/util/mutex.h"

namespace kqd {

// NetBSD's vfsquery flags for EVFILT_FS (<sys/mount.h>).
constexpr uint32_t kFsVqMount = VQ_MOUNT;
constexpr uint32_t kFsVqUnmount = VQ_UNMOUNT;

class MountNamespace;

// The mount tables of the namespaces knotes' owners live in.
class MountTables : public std::enable_shared_from_this<MountTables> {
 public:
  // Runs on the reactor thread, no lock held, with the VQ_* bits of a change.
  using Callback = std::function<void(uint32_t vq)>;

  struct Subscription {
    std::shared_ptr<MountNamespace> ns;  // keeps the namespace's file open
    uint64_t token = 0;
  };

  // `limits`: where the namespaces' descriptors are charged (kDaemonFds).
  static std::shared_ptr<MountTables> Create(Reactor* reactor, UserLimits* limits);

  class Passkey {
    friend class MountTables;
    Passkey() = default;
  };
  MountTables(Passkey, Reactor* reactor, UserLimits* limits);
  MountTables(const MountTables&) = delete;
  MountTables& operator=(const MountTables&) = delete;

  // Watches the mount namespace of process `pid`. A namespace nobody
  // watches yet costs the daemon a descriptor, charged to `uid`
  // (Resource::kDaemonFds) for as long as the namespace is watched.
  // 0 or an errno: ESRCH if the process is gone, ENOMEM at the user's
  // share of descriptors, ENFILE if the daemon has none left.
  int Subscribe(pid_t pid, uid_t uid, Callback cb, Subscription* out) EXCLUDES(mu_);
  void Unsubscribe(Subscription* sub) EXCLUDES(mu_);

  // Which file system mount `mount_id` of the subscription's namespace
  // shows ("major:minor root" from mountinfo), or "" if the namespace has
  // no such mount (now). Re-reads the table first if it does not know the
  // ID, in case a mount is newer than the last snapshot.
  std::string MountIdentity(const Subscription& sub, uint64_t mount_id);

  // Namespaces with a file open (tests).
  size_t namespace_count() EXCLUDES(mu_);

 private:
  Reactor* const reactor_;
  UserLimits* const limits_;
  Mutex mu_;  // taken under a kqueue's lock, before a MountNamespace's
  std::map<std::pair<dev_t, ino_t>, std::weak_ptr<MountNamespace>> namespaces_ GUARDED_BY(mu_);
};

class FsFilter : public FilterOps {
 public:
  explicit FsFilter(Runtime* runtime);

  int Attach(Knote& kn) override;
  void Detach(Knote& kn) override;
  bool Event(Knote& kn, long hint) override;
  // NetBSD's filt_fsattach sets EV_CLEAR.
  uint32_t ImpliedFlags() const override { return EV_CLEAR; }

  MountTables& mounts() { return *mounts_; }

 private:
  const std::shared_ptr<MountTables> mounts_;
};

// For the system filter table.
std::shared_ptr<FilterOps> MakeFsFilter(Runtime* runtime);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_FS_FS_FILTER_H_
