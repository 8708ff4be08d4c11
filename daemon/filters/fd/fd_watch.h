// Watching a client's file for readiness without keeping it open.
//
// THE PROBLEM. The daemon sees a client's descriptor only through a
// transient copy (pidfd_getfd; in unit tests an F_DUPFD copy). Holding that
// copy would keep the file alive: a pipe's writer would never get EPIPE, a
// socket's peer never EOF, after the client closed its fd. BSD's kqueue holds
// no such reference (close removes the knote), so neither may we.
//
// THE MECHANISM. An epoll item does not hold its file: when the last
// reference goes, the kernel removes the item by itself. So for each knote
// we EPOLL_CTL_ADD the copy (edge-triggered, so every wake-up of the file's
// wait queue reports once more) and close the copy at once. The item lives
// on, reporting events, until the file dies.
//
// THE CATCH: epoll keys its items by (file, fd number) and EPOLL_CTL_DEL must
// name both. To delete an item later we need a copy of the same file at the
// same number it was added under. So items are added under KEY NUMBERS:
//
//   * FdKeySlots (one per process: the fd table is per process) reserves a
//     range [base, top) of fd numbers high in the table. At start the soft
//     RLIMIT_NOFILE is raised to the hard limit; top = min(that, 65536),
//     and the range is the last min(1024, max(16, top/16)) numbers. Linux
//     hands out the lowest free number, so the daemon's ordinary fds stay
//     below base.
//   * A slot, once used, is held at rest by a placeholder: a dup of one
//     /dev/null descriptor (taken with F_DUPFD at exactly that number, which
//     is race-free: if an ordinary fd got there first, the slot is skipped).
//     The placeholder keeps the number from being handed out while it is
//     not in use, so an atomic dup3() onto it never closes anything but our
//     own placeholder.
//   * To add or delete an item: under the slots' mutex, dup3 the copy onto
//     the key number (replacing the placeholder), epoll_ctl, dup3 the
//     placeholder back (dropping our reference to the client's file).
//   * A key number only has to be unique among the items of one epoll
//     instance for one file; we make it unique per INODE among live watches
//     (FdWatcher keeps the set of slots in use per (st_dev, st_ino)). Then a
//     delete done with a copy that turns out to be another open file of the
//     same inode (the client reused the fd number) cannot hit another
//     knote's item. Most files are watched once, so nearly every item uses
//     the first slot: 5000 knotes on 5000 pipes cost no extra descriptor.
//   * EEXIST on add means an item of ours whose knote is gone still exists
//     for that (file, slot) — see "zombies" — and the next slot is tried.
//
// WHY AN EPOLL INSTANCE OF OUR OWN (one per filter, itself one fd in the
// Reactor's set) rather than Reactor::AddFd: the dup3 onto a key number and
// the epoll_ctl must happen together under the slots' mutex, and AddFd would
// take the reactor's lock inside ours (the wrong order); and DEL needs the
// key number, which the Reactor's RemoveFd does not know.
//
// FD BUDGET: per process 1 (/dev/null) + the placeholders (at most the
// largest number of live knotes on one inode; 1024 at most, usually 1);
// per FdWatcher 1 epoll instance (+1 inotify instance for EVFILT_READ).
// Each watcher's epoll fd is one fd in the Reactor's epoll set.
//
// ZOMBIES. If the client closes its fd while the file lives on elsewhere (a
// dup, a child), the knote is dropped (BSD semantics) but the item cannot be
// deleted: no copy of the file can be had any more. It stays, harmless: it
// keeps nothing alive, its events find no callback, and it vanishes with the
// file.
//
// REGULAR FILES cannot be epolled (EPERM). EVFILT_READ on them is driven by
// one inotify instance per watcher (an InotifyMux, daemon/os): IN_MODIFY and
// directory entry changes on the inode, watched through /proc/self/fd/<copy>
// (a watch pins the inode, not the open file).
//
// Lock order: callers may hold a kqueue mutex; FdWatcher::mu_ is taken next,
// then FdKeySlots' mutex. Callbacks run on the reactor thread with no lock
// held (they call Knote::Notify, which takes a kqueue mutex).
#ifndef KQUEUED_DAEMON_FILTERS_FD_FD_WATCH_H_
#define KQUEUED_DAEMON_FILTERS_FD_FD_WATCH_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/core/reactor.h"
#include "daemon/os/inotify_mux.h"
#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

// The reserved key numbers of this process (see above).
class FdKeySlots {
 public:
  // The process's instance, made on first use.
  static FdKeySlots& Get();

  bool ok() const { return devnull_.valid() && count_ > 0; }
  int base() const { return base_; }
  int count() const { return count_; }

  // Puts `file` at number base()+slot, runs op(number), and puts the
  // placeholder back. Returns op's result, or -EBUSY if an fd that is not
  // ours occupies the number (try another slot).
  int WithFileAt(int slot, int file, const std::function<int(int)>& op) EXCLUDES(mu_);

 private:
  FdKeySlots();
  // Reserves base_+slot with a placeholder if not yet done. Under mu_.
  bool ReserveLocked(int slot) REQUIRES(mu_);

  ScopedFd devnull_;
  int base_ = 0;
  int count_ = 0;
  // Guards placeholders_ and dup3 onto the slots; the last lock (taken
  // under FdWatcher::mu_).
  Mutex mu_;
  std::vector<ScopedFd> placeholders_ GUARDED_BY(mu_);  // by slot; invalid: not reserved
};

class FdWatcher : public std::enable_shared_from_this<FdWatcher> {
 public:
  using Callback = std::function<void()>;
  using InodeKey = std::pair<dev_t, ino_t>;

  // One epoll item of a knote.
  struct Item {
    uint64_t token = 0;  // 0: none
    int slot = -1;
    InodeKey inode{};
  };
  // One inotify subscription of a knote.
  using InodeWatch = InotifyMux::Subscription;

  // with_inotify: also make the inotify instance (EVFILT_READ needs it).
  static std::shared_ptr<FdWatcher> Create(Reactor* reactor, bool with_inotify);

  // Only Create can make one (it must be owned by a shared_ptr).
  class Passkey {
    friend class FdWatcher;
    Passkey() = default;
  };
  FdWatcher(Passkey, Reactor* reactor);
  ~FdWatcher();
  FdWatcher(const FdWatcher&) = delete;
  FdWatcher& operator=(const FdWatcher&) = delete;

  bool ok() const { return epoll_.valid() && reactor_token_ > 0; }

  // Adds an item for `file` (a transient copy; the caller closes it after)
  // reporting `events` (EPOLLET is added); `cb` runs on the reactor thread
  // at each wake-up. Returns 0 or an errno: EPERM if the file cannot be
  // polled, ENOMEM if every slot is in use for this inode.
  int Watch(int file, InodeKey inode, uint32_t events, Callback cb, Item* out) EXCLUDES(mu_);
  // Deletes the item. `file` is a copy of the watched file (any open file
  // of the same inode is harmless), or -1 if none can be had: the item is
  // then left to vanish with its file.
  void Unwatch(const Item& item, int file) EXCLUDES(mu_);

  // IN_MODIFY on the inode of `file`; 0 or an errno.
  int WatchInode(int file, Callback cb, InodeWatch* out);
  void UnwatchInode(const InodeWatch& watch);

  // Live epoll items we know of (zombies excluded), and the epoll instance
  // itself (tests read the kernel's view in /proc/self/fdinfo/<epoll_fd>).
  size_t item_count() const EXCLUDES(mu_);
  int epoll_fd() const { return epoll_.get(); }

 private:
  void OnEpoll() EXCLUDES(mu_);

  Reactor* const reactor_;
  ScopedFd epoll_;
  std::shared_ptr<InotifyMux> inotify_;  // null: not asked for, or failed
  int64_t reactor_token_ = 0;
  int64_t inotify_token_ = 0;

  // Guards everything below; taken under a kqueue's lock, before
  // FdKeySlots' (see the lock order above).
  mutable Mutex mu_;
  uint64_t next_token_ GUARDED_BY(mu_) = 1;
  std::unordered_map<uint64_t, Callback> items_ GUARDED_BY(mu_);  // epoll token -> callback
  std::map<InodeKey, std::set<int>> slots_in_use_ GUARDED_BY(mu_);
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_FD_FD_WATCH_H_
