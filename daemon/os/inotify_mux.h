// InotifyMux: one inotify instance multiplexed over many subscribers — every
// EVFILT_VNODE knote, and EVFILT_READ's regular files and directories.
// Not bound to the event loop: its owner polls fd() and calls OnReadable().
//
// WHY ONE. inotify instances are a scarce per-user resource (128 by default)
// and each costs a descriptor; watches are cheap (~200k per user). So all
// subscribers share one instance, and the event loop polls one fd.
//
// KEYED ON THE INODE, NOT THE PATH. A watch is added through
// /proc/self/fd/<transient copy of the client's fd>: the magic link resolves
// to the open file's inode, so renaming or unlinking a name does not move or
// break the watch, and the daemon keeps no descriptor afterwards. (The
// daemon never opens the file by path: that would itself produce IN_OPEN /
// IN_CLOSE, i.e. spurious NOTE_OPEN / NOTE_CLOSE.)
//
// SHARED WATCH DESCRIPTORS. The kernel keeps one wd per inode per instance
// and one mask for it, so several knotes on one file share a wd and the
// kernel mask must cover all of them:
//   * adding uses IN_MASK_ADD, so it only ever grows the kernel mask and never
//     disturbs the other subscribers (and needs no lookup by inode: the
//     kernel returns the inode's existing wd);
//   * each subscriber keeps its own interest; events outside it are not
//     delivered to it;
//   * when a subscriber leaves and a copy of the file can still be had, the
//     mask is recomputed and set again (without IN_MASK_ADD) so that noisy
//     events (IN_ACCESS, IN_OPEN...) stop; without a copy the larger mask
//     stays until the watch goes — harmless, only filtered;
//   * the last subscriber leaving removes the watch (inotify_rm_watch needs
//     only the wd).
//
// IN_IGNORED. The kernel drops a watch by itself when the inode dies (last
// link gone and last reference closed) or its filesystem is shut down; it
// says so with IN_IGNORED. The wd's subscribers then get kIgnored and their
// Subscription is dead (a later Unsubscribe is a no-op; tokens are never
// reused, so it cannot hit another watch even if the wd number comes back).
// A new watch on the same inode simply gets a new wd.
//
// WHAT SUBSCRIBERS RECEIVE. Raw events are classified into the Event bits
// below and accumulated per wd over one read() of the instance (inotify
// already merges identical consecutive events). Events a directory watch
// gets about its CHILDREN (IN_OPEN, IN_MODIFY... with a name) are not about
// the watched vnode and are dropped; only entry changes (create, delete,
// moves) are kept for directories. A subdirectory renamed within the same
// directory (IN_MOVED_FROM and IN_MOVED_TO with one cookie on one wd in the
// same batch) is told apart from one moved in or out (the link count of
// the directory changes only in the latter).
//
// Lock order: callers may hold a kqueue lock; mu_ is taken after it.
// Callbacks run on the thread that calls OnReadable() (the reactor thread),
// with no lock held.
#ifndef KQUEUED_DAEMON_OS_INOTIFY_MUX_H_
#define KQUEUED_DAEMON_OS_INOTIFY_MUX_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

class InotifyMux {
 public:
  // What happened to a watched inode (bits, accumulated per batch).
  enum Event : uint32_t {
    kModify = 1u << 0,         // IN_MODIFY: contents written or truncated
    kAttrib = 1u << 1,         // IN_ATTRIB: metadata or link count
    kEntryChanged = 1u << 2,   // directory: a non-directory entry created,
                               // deleted or moved in/out/within
    kSubdirLinked = 1u << 3,   // directory: a subdirectory created, removed,
                               // or moved in or out (its ".." link changes)
    kSubdirRenamed = 1u << 4,  // directory: a subdirectory renamed within it
    kOpen = 1u << 5,           // IN_OPEN of the vnode itself
    kCloseWrite = 1u << 6,     // IN_CLOSE_WRITE
    kCloseNoWrite = 1u << 7,   // IN_CLOSE_NOWRITE
    kAccess = 1u << 8,         // IN_ACCESS: read (or readdir)
    kMoveSelf = 1u << 9,       // IN_MOVE_SELF: renamed
    kDeleteSelf = 1u << 10,    // IN_DELETE_SELF: inode gone
    kUnmount = 1u << 11,       // IN_UNMOUNT: its filesystem was shut down
    kIgnored = 1u << 12,       // IN_IGNORED: the kernel dropped the watch
    kOverflow = 1u << 13,      // IN_Q_OVERFLOW: events were lost (everyone)
  };
  // Delivered whatever the interest.
  static constexpr uint32_t kAlways = kUnmount | kIgnored | kOverflow;

  using Callback = std::function<void(uint32_t events)>;

  struct Subscription {
    int wd = -1;  // -1: none
    uint64_t token = 0;
  };

  // Null (errno set) if no inotify instance can be made.
  static std::shared_ptr<InotifyMux> Create();

  // Only Create can make one (it must be owned by a shared_ptr).
  class Passkey {
    friend class InotifyMux;
    Passkey() = default;
  };
  explicit InotifyMux(Passkey);
  InotifyMux(const InotifyMux&) = delete;
  InotifyMux& operator=(const InotifyMux&) = delete;

  // Subscribes `cb` to inotify events `mask` (IN_* bits) on the inode of
  // `file`, a transient copy the caller closes afterwards. Returns 0 or an
  // errno (ENOSPC: the user's watch limit).
  int Subscribe(int file, uint32_t mask, Callback cb, Subscription* out) EXCLUDES(mu_);
  // Ends a subscription. `file`: a copy of the watched file to narrow the
  // kernel mask with, or -1 if none can be had. To change a subscriber's
  // mask, Subscribe anew, then Unsubscribe the old one with the same file:
  // the kernel watch is never dropped in between.
  void Unsubscribe(const Subscription& sub, int file) EXCLUDES(mu_);

  // The instance: readable when events are queued. Its owner polls it
  // (level-triggered) and calls OnReadable, which delivers them.
  int inotify_fd() const { return inotify_.get(); }
  void OnReadable() EXCLUDES(mu_);

  // For tests: the number of live watch descriptors.
  size_t watch_count() const EXCLUDES(mu_);

  // The Event bits an inotify mask can produce.
  static uint32_t InterestOf(uint32_t mask);

 private:
  struct Subscriber {
    uint32_t mask;
    uint32_t interest;  // InterestOf(mask)
    Callback cb;
  };
  struct Watch {
    uint32_t kernel_mask = 0;  // what the kernel was last told
    std::map<uint64_t, Subscriber> subscribers;
  };

  // inotify_add_watch through /proc/self/fd/<file>; the wd or -errno.
  int AddWatchLocked(int file, uint32_t mask) REQUIRES(mu_);

  ScopedFd inotify_;

  // Guards everything below; taken under a kqueue's lock (Subscribe from
  // Attach), nothing taken under it (callbacks run after it is released).
  mutable Mutex mu_;
  uint64_t next_token_ GUARDED_BY(mu_) = 1;
  std::unordered_map<int, Watch> watches_ GUARDED_BY(mu_);  // by wd
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_INOTIFY_MUX_H_
