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
//   * FdKeyRange (one per process: the fd table is per process) sets aside
//     the numbers [base, top) high in the table. At start the soft
//     RLIMIT_NOFILE is raised to the hard limit; top = min(that, 65536),
//     base = top / 4. Linux hands out the lowest free number, so the
//     daemon's ordinary fds stay below base.
//   * Each FdWatcher gives every item a number of the range, unique among
//     the items of its epoll instance (shard, below) and only there: each
//     shard draws its own numbers from the bottom of the range, and
//     numbers of deleted items are reused. Nothing is open at a key number
//     at rest: a number is only a name inside the epoll instance.
//   * To add or delete an item: F_DUPFD the copy to exactly the item's
//     number (F_DUPFD takes the lowest free number >= the one asked for, so
//     it never replaces anything; if the number is taken by an fd of the
//     daemon, a new item tries another number, a delete leaves a zombie),
//     epoll_ctl, close the number again.
//   * ONE ITEM PER OPEN FILE. Every knote of a filter on one open file
//     (any number of kqueues, processes sharing the file after fork or
//     SCM_RIGHTS) subscribes to one shared item. Linux allows a file only
//     500 wake-up paths through nested epolls (ours sits in the Reactor's):
//     an item per knote made the 501st knote on a file fail with EINVAL.
//   * THE OPEN FILE'S IDENTITY without holding it:
//     kcmp(self, self, KCMP_EPOLL_TFD, copy, {epoll, key number, 0}) says
//     whether a copy is the very open file of the item added under that
//     number (ENOENT once the item vanished with its file). Because key
//     numbers are unique in the instance, the item is found by its number
//     alone. The same kcmp finds an existing item for a new knote (among
//     the items of the same inode) and tells the filter, at each
//     evaluation, that the client's fd still names the registered open
//     file — not just the same inode and access mode.
//   * SHARDS. The kernel answers that kcmp by walking the epoll instance's
//     items one by one (ep_find_tfd: its tree is ordered by file, not by
//     number), so with every item in one instance each evaluation cost time
//     linear in the files watched (the harvest of 1 pipe beside 9000 idle
//     ones: 2–16× the cost beside 100). Items are therefore spread over
//     epoll instances of at most kShardItems items each (each one fd in
//     the Reactor's set; the first made with the watcher and kept, the
//     others made as needed and closed when emptied): a kcmp walks at most
//     kShardItems items, whatever the total. An item stays in its shard
//     for life; a new one goes to a shard with room.
//
// THE ADD REPORT. Adding an edge-triggered item on a ready file queues one
// report at once. The registration evaluates the file itself, so that
// report is no news; delivered, it re-fired an EV_CLEAR knote that had just
// been collected (two events, no new activity). Watch drains the epoll
// under its lock right after the add, drops the new item's report and keeps
// the others (for the subscribers they had then) for the reactor thread.
// Only the shard concerned is drained: the new item's, or, for a knote
// joining an existing item, that item's (its earlier reports go to its
// earlier subscribers) — one epoll_wait, whatever the number of shards.
// That epoll_wait also tells the new item's readiness: epoll polls the file
// for the item's events when it reports it (ep_send_events), and an item
// it does not report is not ready (it was not at the add, and any wake-up
// since would have queued it). The registration's evaluation uses that
// instead of a poll() of its own (Watch's *revents).
//
// WHY EPOLL INSTANCES OF OUR OWN (per filter, each one fd in the Reactor's
// set) rather than Reactor::AddFd: key numbers must be unique in
// the instance and chosen by us, DEL and kcmp need them, and the add, the
// drain of its report and the subscriber bookkeeping happen together under
// the watcher's mutex.
//
// FD BUDGET: per FdWatcher one epoll instance per kShardItems items (at
// least one; +1 inotify instance for EVFILT_READ); nothing per item. Each
// shard's epoll fd is one fd in the Reactor's epoll set. Key numbers are
// drawn per shard, so they bound nothing in total: the daemon's own
// descriptors do (one per kShardItems items, ENFILE when none can be
// made), and so does each user's watched-descriptor ceiling
// (core/user_limits.h, Resource::kWatchedFds).
//
// ZOMBIES. If the client closes its fd while the file lives on elsewhere (a
// dup, a child), the knote is dropped (BSD semantics) but the item cannot be
// deleted: no copy of the file can be had any more. It stays, harmless: it
// keeps nothing alive, its events find no subscriber, and it vanishes with
// the file. It stays known (and keeps its number) so a later registration of
// the same open file adopts it; zombies whose file died are swept (kcmp
// finds no item) once they have doubled in number.
//
// REGULAR FILES cannot be epolled (EPERM). EVFILT_READ on them is driven by
// one inotify instance per watcher (an InotifyMux, daemon/os): IN_MODIFY and
// directory entry changes on the inode, watched through /proc/self/fd/<copy>
// (a watch pins the inode, not the open file).
//
// Lock order: callers may hold a kqueue mutex; FdWatcher::mu_ is taken next
// (then, to post a task, the reactor's). Callbacks run on the reactor thread with no lock
// held (they call Knote::Notify, which takes a kqueue mutex).
#ifndef KQUEUED_DAEMON_FILTERS_FD_FD_WATCH_H_
#define KQUEUED_DAEMON_FILTERS_FD_FD_WATCH_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/core/reactor.h"
#include "daemon/os/inotify_mux.h"
#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

// The range of key numbers of this process (see above).
class FdKeyRange {
 public:
  // The process's instance, made on first use.
  static const FdKeyRange& Get();

  bool ok() const { return top_ > base_; }
  int base() const { return base_; }
  int top() const { return top_; }

  // Puts a copy of `file` at exactly `number`, runs op(number), closes the
  // number again. Returns op's result, or -EBUSY if the number is held by
  // another fd of ours (then *free_above, if given, is the lowest free
  // number above it), or another -errno.
  static int WithFileAt(int number, int file, const std::function<int(int)>& op,
                        int* free_above = nullptr);

 private:
  FdKeyRange();
  int base_ = 0;
  int top_ = 0;
};

class FdWatcher : public std::enable_shared_from_this<FdWatcher> {
 public:
  using Callback = std::function<void()>;
  using InodeKey = std::pair<dev_t, ino_t>;

  // Items per epoll instance at most (SHARDS above): bounds a kcmp's walk.
  static constexpr size_t kShardItems = 64;

  // One knote's subscription to the epoll item of its open file.
  struct Item {
    uint64_t file = 0;  // the open file's item (epoll data); 0: none
    uint64_t sub = 0;   // this subscriber
    int number = -1;    // its key number (for IsSameFile)
    int epoll = -1;     // the epoll instance (shard) holding it
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

  // Subscribes `cb` to the wake-ups of the open file `file` (a transient
  // copy; the caller closes it after) of inode `inode`, reporting `events`
  // (EPOLLET is added; a watcher is used with one `events` only). Every
  // subscription to one open file shares one epoll item. Wake-ups the file had before this call
  // (including the report epoll makes when an item is added on a ready
  // file) are not delivered to the new subscriber: its registration
  // evaluates the file after this. `cb` runs on the reactor thread.
  // *revents (if given): when a new item was added, the events epoll
  // reported for it at the drain that dropped its add report — the file's
  // poll state for `events` at that instant, 0 if not ready (THE ADD
  // REPORT above); -1 when the subscription joined an existing item, whose
  // state the drain does not tell.
  // Returns 0 or an errno: EPERM if the file cannot be polled, ENOMEM if
  // every key number is in use, ENFILE if no epoll instance can be made.
  int Watch(int file, InodeKey inode, uint32_t events, Callback cb, Item* out,
            int* revents = nullptr) EXCLUDES(mu_);
  // Ends the subscription. When it was the item's last, the item is deleted
  // with a copy from `copy` (called only then; it may return an invalid fd
  // if no copy can be had: the item is left to vanish with its file).
  void Unwatch(const Item& item, const std::function<ScopedFd()>& copy) EXCLUDES(mu_);
  // Whether `file` is the very open file the item watches: one kcmp over at
  // most kShardItems items, no lock. False if it is another file, or the
  // item vanished with its file.
  bool IsSameFile(const Item& item, int file) const;

  // IN_MODIFY on the inode of `file`; 0 or an errno.
  int WatchInode(int file, Callback cb, InodeWatch* out);
  void UnwatchInode(const InodeWatch& watch);

  // Live epoll items we know of (zombies excluded), and the epoll
  // instances (tests read the kernel's view in /proc/self/fdinfo/<fd>).
  size_t item_count() const EXCLUDES(mu_);
  std::vector<int> epoll_fds() const EXCLUDES(mu_);

 private:
  // One epoll instance and how many items (zombies included) it holds.
  // Key numbers are unique within a shard only: epoll names an item by
  // (open file, number) inside its own instance, and kcmp and DEL name the
  // instance too. So a shard's at most kShardItems items use the range's
  // lowest numbers, and no pool of numbers is shared across shards (or
  // users).
  struct Shard {
    ScopedFd epoll;
    int64_t reactor_token = 0;
    size_t items = 0;
    std::set<int> free_numbers;  // key numbers given back
    int next_number = -1;        // lowest never used (-1: the range's base)
  };
  // One epoll item: an open file and who listens to it.
  struct OpenFile {
    int number = -1;
    size_t shard = 0;
    InodeKey inode{};
    std::map<uint64_t, Callback> subs;  // empty: a zombie (fd_watch.h)
  };
  // The reactor saw shard `index` readable.
  void OnEpoll(size_t index) EXCLUDES(mu_);
  // Delivers pending_ (a posted task).
  void DeliverPending() EXCLUDES(mu_);
  // Reads every pending report of shard `index` into pending_ (the
  // subscribers of each at this moment), except those of `skip`, whose
  // reported events go to *skipped (if given; left alone if none).
  void DrainLocked(size_t index, uint64_t skip, int* skipped = nullptr) REQUIRES(mu_);
  // kcmp of `file` against the item at `number` of instance `epoll`: 0
  // same, 1 other file, -1 no such item (vanished with its file). Needs no
  // lock.
  static int Compare(int epoll, int file, int number);
  // A shard with room for one more item (made if need be), or -1 with
  // *error set.
  long ShardWithRoomLocked(int* error) REQUIRES(mu_);
  // A key number free in `shard`, or -1.
  int TakeNumberLocked(Shard* shard) REQUIRES(mu_);
  void ForgetLocked(std::unordered_map<uint64_t, OpenFile>::iterator it) REQUIRES(mu_);
  // A reactor task that delivers pending_.
  Reactor::Task PendingTask();

  Reactor* const reactor_;
  std::shared_ptr<InotifyMux> inotify_;  // null: not asked for, or failed
  int64_t inotify_token_ = 0;

  // The watcher's items and the reports drained but not yet delivered.
  // Taken under a kqueue's lock (a knote's attach/detach); only the
  // reactor's lock (AddFd, Post) is taken under it. Callbacks run without it.
  mutable Mutex mu_;
  // Indexed by OpenFile::shard; null: a closed shard (slot reused). A
  // shard is closed only when it holds no item, so an Item's epoll fd stays
  // valid while the subscription lives.
  std::vector<std::unique_ptr<Shard>> shards_ GUARDED_BY(mu_);
  size_t fill_ GUARDED_BY(mu_) = 0;  // the shard new items go to first
  uint64_t next_token_ GUARDED_BY(mu_) = 1;
  std::unordered_map<uint64_t, OpenFile> files_ GUARDED_BY(mu_);  // epoll data -> item
  std::map<InodeKey, std::set<uint64_t>> by_inode_ GUARDED_BY(mu_);  // items of each inode
  std::vector<Callback> pending_ GUARDED_BY(mu_);  // drained reports not yet delivered
  size_t zombies_ GUARDED_BY(mu_) = 0;  // items in files_ without subscribers
  size_t zombie_sweep_at_ GUARDED_BY(mu_) = 64;  // sweep the zombies at this many
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_FD_FD_WATCH_H_
