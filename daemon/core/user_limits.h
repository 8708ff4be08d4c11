// UserLimits: per-uid ceilings on what one user may make the daemon hold,
// so no user can exhaust it for the others. A Charge is an RAII claim on one
// unit; destroying it gives the unit back.
#ifndef KQUEUED_DAEMON_CORE_USER_LIMITS_H_
#define KQUEUED_DAEMON_CORE_USER_LIMITS_H_

#include <sys/types.h>

#include <cstdint>
#include <array>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "daemon/util/mutex.h"

namespace kqd {

// kFastTimers: timers with a period below kTimerFastPeriodNs
// (timer_filter.h); their number stretches each one's wake-up interval, so a
// user's share of the event loop stays bounded. Its ceiling is `timers`.
//
// kDaemonFds: descriptors the daemon keeps open for a user beyond the
// duration of one call (today: the mount table of each mount namespace
// EVFILT_FS or EVFILT_VNODE watches, charged to the user whose knote made
// the daemon open it). Its ceiling is a share of the daemon's own
// descriptor budget (ForFdBudget), so no one user can exhaust it; past it,
// ENOMEM. When the daemon itself has no descriptor left, the call gets
// ENFILE (the "system" table being the daemon's), never a misleading errno.
//
// kKqueueNames: descriptors a client named as its kqueue (KQ_KEVENT_KQFD)
// that the daemon remembers (RemoteProcess; at most 256 per process), so a
// user with many processes cannot grow those maps without bound. Past the
// ceiling nothing is remembered and the call carries on.
//
// kWatchedFds: knotes of the descriptor filters (EVFILT_READ, WRITE,
// EMPTY). They hold no descriptor, but every 64 open files they watch
// cost the daemon one (an epoll instance, daemon/filters/fd/fd_watch.h);
// the ceiling, twice the descriptor budget (40000 for 20000), keeps one
// user's share of those below a quarter of its daemon-descriptor share.
// ENOMEM past it.
//
// The order is the ABI's KQ_RES_* (kq_stat_user.used/limit).
enum class Resource {
  kKqueues,
  kKnotes,
  kTimers,
  kFastTimers,
  kDaemonFds,
  kKqueueNames,
  kWatchedFds,
  kCount
};

// "kqueues", "knotes", "timers" ...: for log lines.
const char* ResourceName(Resource r);

struct LimitConfig {
  // The seed's kq_calloutmax: timers per user.
  uint64_t timers = 4096;
  uint64_t kqueues = 1024;
  uint64_t knotes = 65536;
  // Daemon descriptors held for one user (see Resource::kDaemonFds).
  uint64_t daemon_fds = 1024;
  // Remembered kqueue descriptor names (see Resource::kKqueueNames): 16
  // processes' worth of the per-process maximum.
  uint64_t kqueue_names = 4096;
  // Descriptor-filter knotes (see Resource::kWatchedFds).
  uint64_t watched_fds = 8192;

  // The defaults, with daemon_fds an eighth of `fd_budget` (the daemon's
  // RLIMIT_NOFILE): at least eight users must collude to run the daemon out
  // of descriptors, and each user still gets room for a few hundred; and
  // watched_fds twice the budget (see Resource::kWatchedFds).
  static LimitConfig ForFdBudget(uint64_t fd_budget);
};

class UserLimits : public std::enable_shared_from_this<UserLimits> {
 public:
  class Charge {
   public:
    ~Charge();
    Charge(const Charge&) = delete;
    Charge& operator=(const Charge&) = delete;

   private:
    friend class UserLimits;
    Charge(std::shared_ptr<UserLimits> limits, uid_t uid, Resource r)
        : limits_(std::move(limits)), uid_(uid), resource_(r) {}
    std::shared_ptr<UserLimits> limits_;
    uid_t uid_;
    Resource resource_;
  };

  static std::shared_ptr<UserLimits> Create(LimitConfig config) {
    return std::shared_ptr<UserLimits>(new UserLimits(config));
  }

  // One unit of `r` for `uid`, or null when the user is at the ceiling.
  // uid 0 is limited too: a runaway root client must not starve the others.
  std::unique_ptr<Charge> Take(uid_t uid, Resource r) EXCLUDES(mu_);
  uint64_t InUse(uid_t uid, Resource r) const EXCLUDES(mu_);
  // Every user holding anything, with its use of each resource (kqstat).
  using Usage = std::array<uint64_t, static_cast<int>(Resource::kCount)>;
  std::map<uid_t, Usage> AllInUse() const EXCLUDES(mu_);
  // The ceiling of `r` for every user.
  uint64_t Ceiling(Resource r) const;
  const LimitConfig& config() const { return config_; }

  // Called (without the lock) each time Take refuses: the daemon logs it.
  // Set before clients are served; null to stop.
  using RefusalObserver = std::function<void(uid_t, Resource, uint64_t ceiling)>;
  void set_refusal_observer(RefusalObserver fn) EXCLUDES(mu_);

 private:
  explicit UserLimits(LimitConfig config) : config_(config) {}
  void Give(uid_t uid, Resource r) EXCLUDES(mu_);

  const LimitConfig config_;
  // The counts and the observer. A leaf: taken under kqueue and filter
  // locks (a knote's charge), nothing under it; the observer runs after it.
  mutable Mutex mu_;
  std::map<uid_t, std::array<uint64_t, static_cast<int>(Resource::kCount)>> used_
      GUARDED_BY(mu_);
  RefusalObserver on_refused_ GUARDED_BY(mu_);
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_USER_LIMITS_H_
