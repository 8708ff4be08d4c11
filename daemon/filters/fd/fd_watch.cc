#include "daemon/filters/fd/fd_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <linux/kcmp.h>
#include <unistd.h>

#include <algorithm>

#include "daemon/os/fd_limit.h"

namespace kqd {
namespace {

// The key range ends here at most: a copy put at a number grows the fd
// table up to it, and a table of millions of entries would be memory for nothing.
constexpr rlim_t kMaxTop = 65536;
// Below this the table is too small to set a range aside.
constexpr rlim_t kMinTop = 256;
// A new item tries at most this many key numbers.
constexpr int kMaxNumberAttempts = 64;
// Events read from a watcher's epoll per epoll_wait (drained until empty).
constexpr int kEpollBatch = 256;
// Zombie items are swept for vanished files when this many have gathered
// (and then when their number doubles).
constexpr size_t kMinZombieSweep = 64;
// What changes a file's size (or a directory's entries).
constexpr uint32_t kInodeMask =
    IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;

// The daemon never forks: its pid is read once (getpid costs a syscall).
pid_t SelfPid() {
  static const pid_t pid = getpid();
  return pid;
}

}  // namespace

// ---- FdKeyRange -------------------------------------------------------------

const FdKeyRange& FdKeyRange::Get() {
  // The fd table is per process, so the range is too: a function-local
  // static is the one piece of process-wide state here, by necessity.
  static const FdKeyRange range;
  return range;
}

FdKeyRange::FdKeyRange() {
  // The key numbers live at the top of the table: make the table as large
  // as we are allowed to.
  const rlim_t limit = RaiseFdLimit();
  if (limit == 0) return;
  const rlim_t top = std::min(limit, kMaxTop);
  if (top < kMinTop) return;  // too small a table
  top_ = static_cast<int>(top);
  base_ = top_ / 4;
}

int FdKeyRange::WithFileAt(int number, int file, const std::function<int(int)>& op,
                           int* free_above) {
  // F_DUPFD takes the lowest free number >= `number`: we get exactly it
  // only if nobody holds it, and never close anything.
  ScopedFd at(fcntl(file, F_DUPFD_CLOEXEC, number));
  if (!at) return -errno;
  if (at.get() != number) {
    if (free_above != nullptr) *free_above = at.get();
    return -EBUSY;
  }
  return op(number);  // `at` closes: the client's file is no longer referenced
}

// ---- FdWatcher ---------------------------------------------------------------

std::shared_ptr<FdWatcher> FdWatcher::Create(Reactor* reactor, bool with_inotify) {
  auto w = std::make_shared<FdWatcher>(Passkey(), reactor);
  {
    // The first epoll instance at once, kept for the watcher's life: a
    // daemon whose clients watch few files never makes or closes one.
    // Later ones are made as items need them (ShardWithRoomLocked).
    MutexLock l(w->mu_);
    int error = 0;
    w->ShardWithRoomLocked(&error);
  }
  if (with_inotify) {
    w->inotify_ = InotifyMux::Create();
    if (w->inotify_) {
      std::weak_ptr<InotifyMux> mux = w->inotify_;
      int64_t token = reactor->AddFd(w->inotify_->inotify_fd(), EPOLLIN, [mux](uint32_t) {
        if (auto m = mux.lock()) m->OnReadable();
      });
      if (token > 0) w->inotify_token_ = token;
    }
  }
  return w;
}

FdWatcher::FdWatcher(Passkey, Reactor* reactor) : reactor_(reactor) {}

FdWatcher::~FdWatcher() {
  MutexLock l(mu_);
  for (const auto& shard : shards_) {
    if (shard) reactor_->RemoveFd(shard->epoll.get(), shard->reactor_token);
  }
  if (inotify_token_ > 0) reactor_->RemoveFd(inotify_->inotify_fd(), inotify_token_);
}

int FdWatcher::Compare(int epoll, int file, int number) {
  kcmp_epoll_slot target{};
  target.efd = static_cast<uint32_t>(epoll);
  target.tfd = static_cast<uint32_t>(number);
  target.toff = 0;  // numbers are unique in the instance: the first is it
  const long r = syscall(SYS_kcmp, SelfPid(), SelfPid(), KCMP_EPOLL_TFD, file, &target);
  if (r == 0) return 0;
  if (r < 0 && errno == ENOENT) return -1;
  return 1;
}

bool FdWatcher::IsSameFile(const Item& item, int file) const {
  // No lock: a live subscription's number and its shard's epoll fd are
  // fixed (shards live as long as the watcher).
  return item.file != 0 && file >= 0 && Compare(item.epoll, file, item.number) == 0;
}

void FdWatcher::DrainLocked(size_t index, uint64_t skip, int* skipped) {
  const int epoll = shards_[index]->epoll.get();
  epoll_event events[kEpollBatch];
  for (;;) {
    const int n = epoll_wait(epoll, events, kEpollBatch, 0);
    if (n <= 0) return;
    for (int i = 0; i < n; i++) {
      // A copy: epoll_event is packed, and find() takes a reference, which
      // must not bind to the misaligned member (UBSan, found by
      // tests/fuzz/change_fuzzer; corpus/change/crash-fd-watch-packed).
      const uint64_t token = events[i].data.u64;
      if (token == skip) {
        if (skipped != nullptr) *skipped = static_cast<int>(events[i].events & 0xffff);  // poll's bits
        continue;
      }
      auto it = files_.find(token);
      if (it == files_.end()) continue;
      for (auto& [sub, cb] : it->second.subs) pending_.push_back(cb);
    }
    if (n < kEpollBatch) return;
  }
}

long FdWatcher::ShardWithRoomLocked(int* error) {
  if (fill_ < shards_.size() && shards_[fill_] && shards_[fill_]->items < kShardItems)
    return static_cast<long>(fill_);
  size_t free_slot = shards_.size();
  for (size_t i = 0; i < shards_.size(); i++) {
    if (shards_[i] && shards_[i]->items < kShardItems) {
      fill_ = i;
      return static_cast<long>(i);
    }
    if (!shards_[i] && free_slot == shards_.size()) free_slot = i;
  }
  auto shard = std::make_unique<Shard>();
  shard->epoll.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!shard->epoll) {
    *error = errno;
    return -1;
  }
  // A slot of a closed shard is reused; a stale reactor callback for it
  // only drains the new shard early, which any drain may do.
  const size_t index = free_slot;
  std::weak_ptr<FdWatcher> weak = weak_from_this();
  const int64_t token = reactor_->AddFd(shard->epoll.get(), EPOLLIN, [weak, index](uint32_t) {
    if (auto self = weak.lock()) self->OnEpoll(index);
  });
  if (token <= 0) {
    *error = token < 0 ? static_cast<int>(-token) : EMFILE;
    return -1;
  }
  shard->reactor_token = token;
  if (index == shards_.size()) {
    shards_.push_back(std::move(shard));
  } else {
    shards_[index] = std::move(shard);
  }
  fill_ = index;
  return static_cast<long>(index);
}

void FdWatcher::ForgetLocked(std::unordered_map<uint64_t, OpenFile>::iterator it) {
  auto in = by_inode_.find(it->second.inode);
  if (in != by_inode_.end()) {
    in->second.erase(it->first);
    if (in->second.empty()) by_inode_.erase(in);
  }
  const size_t index = it->second.shard;
  shards_[index]->free_numbers.insert(it->second.number);
  files_.erase(it);
  // An emptied shard other than the first is closed: the descriptors
  // follow the files watched. No Item refers to it any more (every live
  // subscription and every zombie counts as one of its items).
  if (--shards_[index]->items == 0 && index != 0) {
    reactor_->RemoveFd(shards_[index]->epoll.get(), shards_[index]->reactor_token);
    shards_[index].reset();
  }
}

int FdWatcher::TakeNumberLocked(Shard* shard) {
  const FdKeyRange& range = FdKeyRange::Get();
  if (shard->next_number < 0) shard->next_number = range.base();
  if (!shard->free_numbers.empty()) {
    const int n = *shard->free_numbers.begin();
    shard->free_numbers.erase(shard->free_numbers.begin());
    return n;
  }
  if (shard->next_number >= range.top()) return -1;
  return shard->next_number++;
}

int FdWatcher::Watch(int file, InodeKey inode, uint32_t events, Callback cb,
                     Item* out, int* revents) {
  if (revents != nullptr) *revents = -1;
  if (!FdKeyRange::Get().ok()) return EMFILE;
  bool deliver = false;
  int error = 0;
  {
    MutexLock l(mu_);
    uint64_t token = 0;
    // An item of this very open file already (or a zombie of it)? Only
    // items of the same inode can be.
    auto in = by_inode_.find(inode);
    if (in != by_inode_.end()) {
      std::vector<uint64_t> vanished;
      for (uint64_t t : in->second) {
        const OpenFile& f = files_.at(t);
        const int same = Compare(shards_[f.shard]->epoll.get(), file, f.number);
        if (same == 0) {
          token = t;
          if (f.subs.empty()) zombies_--;  // a zombie adopted
          // Reports the item had before this registration go to the
          // subscribers it had; the new one evaluates the file after this.
          DrainLocked(f.shard, 0);
          break;
        }
        if (same < 0 && f.subs.empty()) vanished.push_back(t);  // a dead zombie
      }
      for (uint64_t t : vanished) {
        ForgetLocked(files_.find(t));
        zombies_--;
      }
    }
    if (token == 0) {
      const long shard = ShardWithRoomLocked(&error);
      if (shard < 0) {
        error = error == EMFILE || error == ENFILE ? ENFILE : error;
      } else {
        token = next_token_++;
        Shard& s = *shards_[static_cast<size_t>(shard)];
        epoll_event ev{};
        ev.events = events | EPOLLET;
        ev.data.u64 = token;
        int result = -ENOMEM;  // no key number left
        int number = -1;
        std::vector<int> exists;
        // A number held by an fd of ours (EBUSY) is dropped: it will likely
        // stay held, and F_DUPFD told us the next free one, so a block of
        // them is skipped at once. A number where an item of this very file
        // that we lost track of sits (EEXIST) is fine for other files.
        for (int attempt = 0; attempt < kMaxNumberAttempts; attempt++) {
          number = TakeNumberLocked(&s);
          if (number < 0) break;
          int free_above = -1;
          result = FdKeyRange::WithFileAt(number, file, [&](int n) {
            return epoll_ctl(s.epoll.get(), EPOLL_CTL_ADD, n, &ev) == 0 ? 0 : -errno;
          }, &free_above);
          if (result == -EBUSY) {
            if (free_above > s.next_number) s.next_number = free_above;
            continue;
          }
          if (result != -EEXIST) break;
          exists.push_back(number);
        }
        for (int n : exists) s.free_numbers.insert(n);
        if (result != 0) {
          if (number >= 0 && result != -EEXIST && result != -EBUSY) s.free_numbers.insert(number);
          error = result == -EEXIST || result == -EBUSY ? ENOMEM : -result;
          token = 0;
        } else {
          OpenFile& f = files_[token];
          f.number = number;
          f.shard = static_cast<size_t>(shard);
          f.inode = inode;
          s.items++;
          by_inode_[inode].insert(token);
          // The report of the add itself, if the file is ready: no news,
          // but its events are the file's state now (not reported: not
          // ready).
          int reported = 0;
          DrainLocked(f.shard, token, &reported);
          if (revents != nullptr) *revents = reported;
        }
      }
    }
    if (error == 0) {
      OpenFile& f = files_[token];
      const uint64_t sub = next_token_++;
      f.subs.emplace(sub, std::move(cb));
      out->file = token;
      out->sub = sub;
      out->number = f.number;
      out->epoll = shards_[f.shard]->epoll.get();
    }
    deliver = !pending_.empty();
  }
  // The drained reports must still reach their subscribers, and the
  // reactor may no longer see the shard's epoll readable.
  if (deliver) reactor_->Post(PendingTask());
  return error;
}

Reactor::Task FdWatcher::PendingTask() {
  std::weak_ptr<FdWatcher> weak = weak_from_this();
  return [weak] {
    if (auto self = weak.lock()) self->DeliverPending();
  };
}

void FdWatcher::Unwatch(const Item& item, const std::function<ScopedFd()>& copy) {
  if (item.file == 0) return;
  MutexLock l(mu_);
  auto it = files_.find(item.file);
  if (it == files_.end()) return;
  it->second.subs.erase(item.sub);
  if (!it->second.subs.empty()) return;  // others still listen
  ScopedFd file = copy();
  const int number = it->second.number;
  const int epoll = shards_[it->second.shard]->epoll.get();
  // EPOLL_CTL_DEL names the item by (open file, number): it succeeds only
  // with a copy of the very file the item watches, so it is its own check.
  if (file && FdKeyRange::WithFileAt(number, file.get(), [&](int n) {
        return epoll_ctl(epoll, EPOLL_CTL_DEL, n, nullptr) == 0 ? 0 : -errno;
      }) == 0) {
    ForgetLocked(it);
    return;
  }
  if (file && Compare(epoll, file.get(), number) < 0) {
    ForgetLocked(it);  // the item vanished with its file
    return;
  }
  // No copy of the file: a zombie, kept (adoptable) until it is seen gone.
  // Zombies whose file died are swept once they have doubled.
  zombies_++;
  if (zombies_ < zombie_sweep_at_) return;
  for (auto z = files_.begin(); z != files_.end();) {
    auto next = std::next(z);
    const int zepoll = shards_[z->second.shard]->epoll.get();
    // Against a file that is surely not the item's: ENOENT if it vanished.
    if (z->second.subs.empty() && Compare(zepoll, zepoll, z->second.number) < 0) {
      ForgetLocked(z);
      zombies_--;
    }
    z = next;
  }
  zombie_sweep_at_ = std::max<size_t>(kMinZombieSweep, 2 * zombies_);
}

int FdWatcher::WatchInode(int file, Callback cb, InodeWatch* out) {
  if (!inotify_ || inotify_token_ <= 0) return ENOSYS;
  // A second knote on the same inode shares the wd (the mask is always the
  // same, so nothing changes). Whatever happened, the knote re-evaluates.
  return inotify_->Subscribe(file, kInodeMask, [cb = std::move(cb)](uint32_t) { cb(); }, out);
}

void FdWatcher::UnwatchInode(const InodeWatch& watch) {
  // -1: every subscriber asks for the same mask, there is none to narrow.
  if (inotify_) inotify_->Unsubscribe(watch, -1);
}

size_t FdWatcher::item_count() const {
  MutexLock l(mu_);
  size_t n = 0;
  for (const auto& [token, f] : files_) n += f.subs.empty() ? 0 : 1;
  return n;
}

std::vector<int> FdWatcher::epoll_fds() const {
  MutexLock l(mu_);
  std::vector<int> fds;
  for (const auto& shard : shards_) {
    if (shard) fds.push_back(shard->epoll.get());
  }
  return fds;
}

void FdWatcher::OnEpoll(size_t index) {
  std::vector<Callback> due;
  {
    MutexLock l(mu_);
    if (index < shards_.size() && shards_[index]) DrainLocked(index, 0);
    due.swap(pending_);
  }
  for (auto& cb : due) cb();  // no lock held: they take kqueue locks
}

void FdWatcher::DeliverPending() {
  std::vector<Callback> due;
  {
    MutexLock l(mu_);
    due.swap(pending_);
  }
  for (auto& cb : due) cb();
}

}  // namespace kqd
