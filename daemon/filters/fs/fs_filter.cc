#include "daemon/filters/fs/fs_filter.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>
#include <utility>
#include <vector>

#include "daemon/core/process_context.h"
#include "daemon/os/mountinfo.h"
#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

// One mount namespace's table: its /proc/<pid>/mountinfo kept open (which
// also keeps the namespace alive while knotes watch it), the last snapshot,
// and the subscribers. Owned by the Subscriptions: the last one to go
// closes the file.
class MountNamespace {
 public:
  using Callback = MountTables::Callback;

  // `charge`: the daemon descriptor this namespace's table costs.
  MountNamespace(Reactor* reactor, std::unique_ptr<UserLimits::Charge> charge)
      : reactor_(reactor), charge_(std::move(charge)) {}
  ~MountNamespace() {
    if (token_ > 0) reactor_->RemoveFd(file_.get(), token_);
  }
  MountNamespace(const MountNamespace&) = delete;
  MountNamespace& operator=(const MountNamespace&) = delete;

  // Opens the table of `pid`'s namespace, reads it and starts watching it.
  // 0 or an errno.
  int Start(pid_t pid, const std::shared_ptr<MountNamespace>& self) {
    const std::string path = "/proc/" + std::to_string(pid) + "/mountinfo";
    file_.reset(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!file_) {
      if (errno == ENOENT) return ESRCH;
      // The daemon's own table is full: say so, whatever the kernel's word.
      if (errno == EMFILE || errno == ENFILE) return ENFILE;
      return errno;
    }
    {
      MutexLock l(mu_);
      if (int err = ReadLocked(&mounts_)) return err;
    }
    std::weak_ptr<MountNamespace> weak = self;
    // The kernel flags the file POLLPRI|POLLERR once per change of the
    // table (it is always POLLIN: not asked for).
    token_ = reactor_->AddFd(file_.get(), EPOLLPRI, [weak](uint32_t) {
      if (auto ns = weak.lock()) ns->OnChange();
    });
    return token_ > 0 ? 0 : static_cast<int>(-token_);
  }

  uint64_t AddSubscriber(Callback cb) {
    MutexLock l(mu_);
    const uint64_t token = next_token_++;
    subscribers_.emplace(token, std::move(cb));
    return token;
  }

  void RemoveSubscriber(uint64_t token) {
    MutexLock l(mu_);
    subscribers_.erase(token);
  }

  std::string Identity(uint64_t id, const std::shared_ptr<MountNamespace>& self) {
    MutexLock l(mu_);
    auto it = mounts_.find(id);
    if (it != mounts_.end()) return it->second.identity;
    // Perhaps mounted after the last snapshot. Re-read; the change is then
    // reported from the reactor (our caller holds a kqueue lock, and
    // subscribers take kqueue locks).
    if (const uint32_t vq = RefreshLocked()) {
      std::weak_ptr<MountNamespace> weak = self;
      reactor_->Post([weak, vq] {
        if (auto ns = weak.lock()) ns->Report(vq);
      });
    }
    it = mounts_.find(id);
    return it == mounts_.end() ? std::string() : it->second.identity;
  }

 private:
  struct Mount {
    std::string identity;  // "major:minor root": which file system
    std::string line;      // the whole line: options, mount point...
  };

  void OnChange() {
    uint32_t vq;
    {
      MutexLock l(mu_);
      // A wake-up may find nothing new: the kernel bumps its change count
      // more than once for some operations, and the first wake-up read the
      // final table already. (So a mount that came and went between two
      // reads cannot be told from that, and goes unreported.)
      vq = RefreshLocked();
    }
    if (vq) Report(vq);
  }

  void Report(uint32_t vq) {
    std::vector<Callback> due;
    {
      MutexLock l(mu_);
      for (const auto& [token, cb] : subscribers_) due.push_back(cb);
    }
    for (auto& cb : due) cb(vq);
  }

  // Re-reads the table; the VQ_* bits of what changed since the last read.
  uint32_t RefreshLocked() REQUIRES(mu_) {
    std::map<uint64_t, Mount> now;
    if (ReadLocked(&now) != 0) return 0;
    uint32_t vq = 0;
    for (const auto& [id, m] : now) {
      auto old = mounts_.find(id);
      if (old == mounts_.end()) {
        vq |= kFsVqMount;
      } else if (old->second.identity != m.identity) {
        vq |= kFsVqMount | kFsVqUnmount;  // the ID was freed and reused
      } else if (old->second.line != m.line) {
        vq |= kFsVqMount;  // remount, propagation, move: mount(2) calls
      }
    }
    for (const auto& [id, m] : mounts_) {
      if (!now.count(id)) vq |= kFsVqUnmount;
    }
    mounts_ = std::move(now);
    return vq;
  }

  // Reads the whole table from the start (the seq_file restarts at 0).
  int ReadLocked(std::map<uint64_t, Mount>* out) REQUIRES(mu_) {
    if (lseek(file_.get(), 0, SEEK_SET) < 0) return errno;
    std::string text;
    char buf[16384];
    for (;;) {
      const ssize_t n = read(file_.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (n == 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
      MountinfoLine m;
      if (!ParseMountinfoLine(line, &m)) continue;
      (*out)[m.id] = Mount{m.dev + " " + m.root, line};
    }
    return 0;
  }

  Reactor* const reactor_;
  // The descriptor below, charged to the user who made us open it;
  // declared first, so it is given back after the file is closed.
  std::unique_ptr<UserLimits::Charge> charge_;
  ScopedFd file_;
  int64_t token_ = 0;

  Mutex mu_;  // guards everything below; a leaf (callbacks run without it)
  std::map<uint64_t, Mount> mounts_ GUARDED_BY(mu_);
  std::map<uint64_t, Callback> subscribers_ GUARDED_BY(mu_);
  uint64_t next_token_ GUARDED_BY(mu_) = 1;
};

// ---- MountTables --------------------------------------------------------------

std::shared_ptr<MountTables> MountTables::Create(Reactor* reactor, UserLimits* limits) {
  return std::make_shared<MountTables>(Passkey(), reactor, limits);
}

MountTables::MountTables(Passkey, Reactor* reactor, UserLimits* limits)
    : reactor_(reactor), limits_(limits) {}

int MountTables::Subscribe(pid_t pid, uid_t uid, Callback cb, Subscription* out) {
  // The namespace's identity: the nsfs inode its /proc link points to.
  struct stat st;
  const std::string ns_path = "/proc/" + std::to_string(pid) + "/ns/mnt";
  if (stat(ns_path.c_str(), &st) != 0) return errno == ENOENT ? ESRCH : errno;
  const std::pair<dev_t, ino_t> key{st.st_dev, st.st_ino};

  std::shared_ptr<MountNamespace> ns;
  {
    MutexLock l(mu_);
    auto it = namespaces_.find(key);
    if (it != namespaces_.end()) ns = it->second.lock();
    if (!ns) {
      auto charge = limits_->Take(uid, Resource::kDaemonFds);
      if (!charge) return ENOMEM;
      ns = std::make_shared<MountNamespace>(reactor_, std::move(charge));
      if (int err = ns->Start(pid, ns)) return err;
      namespaces_[key] = ns;
    }
    // Forget namespaces nobody watches any more.
    for (auto i = namespaces_.begin(); i != namespaces_.end();) {
      i = i->second.expired() ? namespaces_.erase(i) : std::next(i);
    }
  }
  out->token = ns->AddSubscriber(std::move(cb));
  out->ns = std::move(ns);
  return 0;
}

void MountTables::Unsubscribe(Subscription* sub) {
  if (!sub->ns) return;
  sub->ns->RemoveSubscriber(sub->token);
  sub->ns.reset();  // the last one closes the namespace's file
}

std::string MountTables::MountIdentity(const Subscription& sub, uint64_t mount_id) {
  return sub.ns ? sub.ns->Identity(mount_id, sub.ns) : std::string();
}

size_t MountTables::namespace_count() {
  MutexLock l(mu_);
  size_t n = 0;
  for (const auto& [key, weak] : namespaces_) n += weak.expired() ? 0 : 1;
  return n;
}

// ---- FsFilter -----------------------------------------------------------------

namespace {

struct FsState : KnoteState {
  MountTables::Subscription sub;
};

}  // namespace

FsFilter::FsFilter(Runtime* runtime)
    : mounts_(MountTables::Create(&runtime->reactor(), &runtime->limits())) {}

int FsFilter::Attach(Knote& kn) {
  auto st = std::make_unique<FsState>();
  std::weak_ptr<Knote> weak = kn.weak_from_this();
  // The hint is the change's VQ_* bits (never 0: 0 means "evaluate").
  int err = mounts_->Subscribe(
      kn.owner->pid(), kn.owner->euid(), [weak](uint32_t vq) { Knote::Notify(weak, vq); },
      &st->sub);
  if (err) return err;
  kn.state = std::move(st);
  return 0;
}

void FsFilter::Detach(Knote& kn) {
  if (auto* st = kn.state_as<FsState>()) mounts_->Unsubscribe(&st->sub);
}

bool FsFilter::Event(Knote& kn, long hint) {
  // As NetBSD's filt_fs: accumulate every change, whatever was asked for.
  if (hint != kHintEvaluate) kn.kev.fflags |= static_cast<uint32_t>(hint);
  kn.kev.data = 0;
  return kn.kev.fflags != 0;
}

std::shared_ptr<FilterOps> MakeFsFilter(Runtime* runtime) {
  return std::make_shared<FsFilter>(runtime);
}

}  // namespace kqd
