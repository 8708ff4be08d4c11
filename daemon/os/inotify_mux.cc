#include "daemon/os/inotify_mux.h"

#include <errno.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <set>
#include <utility>
#include <vector>

namespace kqd {
namespace {

// Buffers drained per OnReadable; the (level-triggered) owner calls again
// if more is queued, so one busy file cannot starve the loop.
constexpr int kMaxReadsPerWake = 16;
constexpr uint32_t kEntryMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;

// A subdirectory move seen in one batch: pairs with one cookie on one wd are
// renames within that directory.
struct DirMove {
  int wd;
  bool from;
};

// The bits for one event about the watched inode itself (no name).
uint32_t SelfEvent(uint32_t mask) {
  uint32_t bits = 0;
  if (mask & IN_MODIFY) bits |= InotifyMux::kModify;
  if (mask & IN_ATTRIB) bits |= InotifyMux::kAttrib;
  if (mask & IN_OPEN) bits |= InotifyMux::kOpen;
  if (mask & IN_CLOSE_WRITE) bits |= InotifyMux::kCloseWrite;
  if (mask & IN_CLOSE_NOWRITE) bits |= InotifyMux::kCloseNoWrite;
  if (mask & IN_ACCESS) bits |= InotifyMux::kAccess;
  if (mask & IN_MOVE_SELF) bits |= InotifyMux::kMoveSelf;
  if (mask & IN_DELETE_SELF) bits |= InotifyMux::kDeleteSelf;
  return bits;
}

}  // namespace

uint32_t InotifyMux::InterestOf(uint32_t mask) {
  uint32_t i = kAlways | SelfEvent(mask);
  if (mask & kEntryMask) i |= kEntryChanged | kSubdirLinked | kSubdirRenamed;
  return i;
}

std::shared_ptr<InotifyMux> InotifyMux::Create() {
  auto w = std::make_shared<InotifyMux>(Passkey());
  w->inotify_.reset(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!w->inotify_) return nullptr;
  return w;
}

InotifyMux::InotifyMux(Passkey) {}

int InotifyMux::AddWatchLocked(int file, uint32_t mask) {
  // The magic link names the open file's inode, not a path: nothing is
  // opened, so no IN_OPEN/IN_CLOSE of our own is produced.
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", file);
  const int wd = inotify_add_watch(inotify_.get(), path, mask);
  return wd >= 0 ? wd : -errno;
}

int InotifyMux::Subscribe(int file, uint32_t mask, Callback cb, Subscription* out) {
  MutexLock l(mu_);
  // IN_MASK_ADD: grow the inode's kernel mask, never narrow what other
  // subscribers of the same wd rely on.
  const int wd = AddWatchLocked(file, mask | IN_MASK_ADD);
  if (wd < 0) return -wd;
  Watch& w = watches_[wd];
  w.kernel_mask |= mask;
  const uint64_t token = next_token_++;
  w.subscribers.emplace(token, Subscriber{mask, InterestOf(mask), std::move(cb)});
  out->wd = wd;
  out->token = token;
  return 0;
}

void InotifyMux::Unsubscribe(const Subscription& sub, int file) {
  if (sub.wd < 0) return;
  MutexLock l(mu_);
  auto it = watches_.find(sub.wd);
  if (it == watches_.end() || it->second.subscribers.erase(sub.token) == 0) {
    return;  // the kernel dropped the watch (IN_IGNORED) already
  }
  Watch& w = it->second;
  if (w.subscribers.empty()) {
    inotify_rm_watch(inotify_.get(), sub.wd);
    watches_.erase(it);
    return;
  }
  if (file < 0) return;  // cannot name the inode: keep the larger mask
  uint32_t wanted = 0;
  for (const auto& [token, s] : w.subscribers) wanted |= s.mask;
  if (wanted == w.kernel_mask) return;
  // Without IN_MASK_ADD the mask is replaced: the noisy events nobody wants
  // any more (IN_ACCESS, IN_OPEN...) stop being queued.
  const int wd = AddWatchLocked(file, wanted);
  if (wd == sub.wd) {
    w.kernel_mask = wanted;
    return;
  }
  if (wd < 0) return;
  // `file` turned out to lead to another watch: our wd is dead (its
  // IN_IGNORED is still queued) or the caller's copy is another inode.
  // Undo what the call did to that other watch.
  auto other = watches_.find(wd);
  if (other == watches_.end()) {
    inotify_rm_watch(inotify_.get(), wd);
  } else {
    AddWatchLocked(file, other->second.kernel_mask);
  }
}

size_t InotifyMux::watch_count() const {
  MutexLock l(mu_);
  return watches_.size();
}

void InotifyMux::OnReadable() {
  alignas(inotify_event) char buf[65536];
  std::map<int, uint32_t> batch;  // wd -> Event bits
  std::map<uint32_t, std::vector<DirMove>> dir_moves;  // by cookie
  bool overflow = false;
  for (int reads = 0; reads < kMaxReadsPerWake; reads++) {
    const ssize_t n = read(inotify_.get(), buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
      off += sizeof(inotify_event) + ev->len;
      const uint32_t m = ev->mask;
      if (m & IN_Q_OVERFLOW) {
        overflow = true;
        continue;
      }
      uint32_t& bits = batch[ev->wd];
      if (m & IN_IGNORED) bits |= kIgnored;
      if (m & IN_UNMOUNT) bits |= kUnmount;
      if (ev->len == 0) {
        bits |= SelfEvent(m);
        continue;
      }
      // An event about an entry of a watched directory. Opens, reads and
      // writes of the entries are not about the directory: dropped.
      const bool dir = (m & IN_ISDIR) != 0;
      if (m & (IN_CREATE | IN_DELETE)) bits |= dir ? kSubdirLinked : kEntryChanged;
      if (m & (IN_MOVED_FROM | IN_MOVED_TO)) {
        if (dir) {
          dir_moves[ev->cookie].push_back(DirMove{ev->wd, (m & IN_MOVED_FROM) != 0});
        } else {
          bits |= kEntryChanged;
        }
      }
    }
  }
  // A subdirectory that left and arrived in the same directory was renamed
  // within it; otherwise it moved in or out (the directory's link count
  // changes).
  for (const auto& [cookie, moves] : dir_moves) {
    std::set<int> from, to;
    for (const DirMove& mv : moves) (mv.from ? from : to).insert(mv.wd);
    for (const DirMove& mv : moves) {
      const bool within = from.count(mv.wd) && to.count(mv.wd);
      batch[mv.wd] |= within ? kSubdirRenamed : kSubdirLinked;
    }
  }

  std::vector<std::pair<Callback, uint32_t>> due;
  {
    MutexLock l(mu_);
    if (overflow) {
      for (const auto& [wd, w] : watches_)
        for (const auto& [token, s] : w.subscribers) due.emplace_back(s.cb, kOverflow);
    }
    for (const auto& [wd, bits] : batch) {
      auto it = watches_.find(wd);
      if (it == watches_.end()) continue;  // removed by us meanwhile
      for (const auto& [token, s] : it->second.subscribers) {
        if (const uint32_t b = bits & s.interest) due.emplace_back(s.cb, b);
      }
      // The kernel has dropped the watch: its wd is dead.
      if (bits & kIgnored) watches_.erase(it);
    }
  }
  for (auto& [cb, bits] : due) cb(bits);  // no lock held: they take kqueue locks
}

}  // namespace kqd
