#include "daemon/filters/fd/fd_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

#include "daemon/os/fd_limit.h"

namespace kqd {
namespace {

// The key range ends here at most: dup3 onto a number grows the fd table up
// to it, and a table of millions of entries would be memory for nothing.
constexpr rlim_t kMaxTop = 65536;
constexpr int kMaxSlots = 1024;
constexpr int kMinSlots = 16;
// Events drained from a watcher's epoll per reactor wake-up; more stay
// ready and the (level-triggered) reactor calls again.
constexpr int kEpollBatch = 256;
// What changes a file's size (or a directory's entries).
constexpr uint32_t kInodeMask =
    IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;

}  // namespace

// ---- FdKeySlots -------------------------------------------------------------

FdKeySlots& FdKeySlots::Get() {
  // The fd table is per process, so the reservation is too: a function-local
  // static is the one piece of process-wide state here, by necessity.
  static FdKeySlots slots;
  return slots;
}

FdKeySlots::FdKeySlots() {
  // The key numbers live at the top of the table: make the table as large
  // as we are allowed to.
  const rlim_t limit = RaiseFdLimit();
  if (limit == 0) return;
  const rlim_t top = std::min(limit, kMaxTop);
  const int count = std::min<int>(kMaxSlots, std::max<int>(kMinSlots, top / 16));
  if (top < static_cast<rlim_t>(4 * count)) return;  // too small a table
  devnull_.reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull_) return;
  base_ = static_cast<int>(top) - count;
  count_ = count;
  placeholders_.resize(count);
}

bool FdKeySlots::ReserveLocked(int slot) {
  if (placeholders_[slot]) return true;
  const int number = base_ + slot;
  // F_DUPFD takes the lowest free number >= `number`: we get exactly it
  // only if nobody holds it, without closing anything.
  ScopedFd got(fcntl(devnull_.get(), F_DUPFD_CLOEXEC, number));
  if (got.get() != number) return false;  // taken (or error): skip the slot
  placeholders_[slot] = std::move(got);
  return true;
}

int FdKeySlots::WithFileAt(int slot, int file, const std::function<int(int)>& op) {
  MutexLock l(mu_);
  if (slot < 0 || slot >= count_) return -EINVAL;
  if (!ReserveLocked(slot)) return -EBUSY;
  const int number = base_ + slot;
  // Atomically replaces our placeholder; nothing else can be at `number`.
  if (dup3(file, number, O_CLOEXEC) < 0) return -errno;
  const int result = op(number);
  // Back to the placeholder: the client's file is no longer referenced.
  if (dup3(devnull_.get(), number, O_CLOEXEC) < 0) {
    placeholders_[slot].reset();  // closes the copy; the slot is re-reserved later
  }
  return result;
}

// ---- FdWatcher ---------------------------------------------------------------

std::shared_ptr<FdWatcher> FdWatcher::Create(Reactor* reactor, bool with_inotify) {
  auto w = std::make_shared<FdWatcher>(Passkey(), reactor);
  w->epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!w->epoll_) return w;
  std::weak_ptr<FdWatcher> weak = w;
  int64_t token = reactor->AddFd(w->epoll_.get(), EPOLLIN, [weak](uint32_t) {
    if (auto self = weak.lock()) self->OnEpoll();
  });
  if (token <= 0) return w;
  w->reactor_token_ = token;
  if (with_inotify) {
    w->inotify_ = InotifyMux::Create();
    if (w->inotify_) {
      std::weak_ptr<InotifyMux> mux = w->inotify_;
      token = reactor->AddFd(w->inotify_->inotify_fd(), EPOLLIN, [mux](uint32_t) {
        if (auto m = mux.lock()) m->OnReadable();
      });
      if (token > 0) w->inotify_token_ = token;
    }
  }
  return w;
}

FdWatcher::FdWatcher(Passkey, Reactor* reactor) : reactor_(reactor) {}

FdWatcher::~FdWatcher() {
  if (reactor_token_ > 0) reactor_->RemoveFd(epoll_.get(), reactor_token_);
  if (inotify_token_ > 0) reactor_->RemoveFd(inotify_->inotify_fd(), inotify_token_);
}

int FdWatcher::Watch(int file, InodeKey inode, uint32_t events, Callback cb,
                     Item* out) {
  FdKeySlots& slots = FdKeySlots::Get();
  if (!slots.ok() || !ok()) return EMFILE;
  MutexLock l(mu_);
  const uint64_t token = next_token_++;
  epoll_event ev{};
  ev.events = events | EPOLLET;
  ev.data.u64 = token;
  std::set<int>& used = slots_in_use_[inode];
  int result = -ENOMEM;  // every slot in use for this inode
  int slot = 0;
  for (; slot < slots.count(); slot++) {
    if (used.count(slot)) continue;
    result = slots.WithFileAt(slot, file, [&](int number) {
      return epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, number, &ev) == 0 ? 0 : -errno;
    });
    // EEXIST: a zombie item of this very file holds the slot; EBUSY: the
    // number is not ours. Either way, the next slot.
    if (result != -EEXIST && result != -EBUSY) break;
  }
  if (result != 0) {
    if (used.empty()) slots_in_use_.erase(inode);
    return result == -EEXIST || result == -EBUSY ? ENOMEM : -result;
  }
  used.insert(slot);
  items_.emplace(token, std::move(cb));
  out->token = token;
  out->slot = slot;
  out->inode = inode;
  return 0;
}

void FdWatcher::Unwatch(const Item& item, int file) {
  if (item.token == 0) return;
  MutexLock l(mu_);
  if (file >= 0) {
    // ENOENT (the item vanished with its file, or `file` is another open
    // file of the inode) is fine.
    FdKeySlots::Get().WithFileAt(item.slot, file, [&](int number) {
      return epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, number, nullptr);
    });
  }
  items_.erase(item.token);
  auto it = slots_in_use_.find(item.inode);
  if (it != slots_in_use_.end()) {
    it->second.erase(item.slot);
    if (it->second.empty()) slots_in_use_.erase(it);
  }
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
  return items_.size();
}

void FdWatcher::OnEpoll() {
  epoll_event events[kEpollBatch];
  const int n = epoll_wait(epoll_.get(), events, kEpollBatch, 0);
  if (n <= 0) return;
  std::vector<Callback> due;
  {
    MutexLock l(mu_);
    for (int i = 0; i < n; i++) {
      auto it = items_.find(events[i].data.u64);
      if (it != items_.end()) due.push_back(it->second);  // else: a zombie
    }
  }
  for (auto& cb : due) cb();  // no lock held: they take kqueue locks
}

}  // namespace kqd
