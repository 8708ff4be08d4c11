// UserLimits: per-uid ceilings on what one user may make the daemon hold,
// so no user can exhaust it for the others. A Charge is an RAII claim on one
// unit; destroying it gives the unit back.
#ifndef KQUEUED_DAEMON_CORE_USER_LIMITS_H_
#define KQUEUED_DAEMON_CORE_USER_LIMITS_H_

#include <sys/types.h>

#include <cstdint>
#include <array>
#include <map>
#include <memory>
#include <mutex>

#include "daemon/util/mutex.h"

namespace kqd {

enum class Resource { kKqueues, kKnotes, kTimers, kCount };

struct LimitConfig {
  // The seed's kq_calloutmax: timers per user.
  uint64_t timers = 4096;
  uint64_t kqueues = 1024;
  uint64_t knotes = 65536;
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

 private:
  explicit UserLimits(LimitConfig config) : config_(config) {}
  void Give(uid_t uid, Resource r) EXCLUDES(mu_);

  const LimitConfig config_;
  mutable Mutex mu_;  // a leaf: taken under kqueue and filter locks, nothing under it
  std::map<uid_t, std::array<uint64_t, static_cast<int>(Resource::kCount)>> used_ GUARDED_BY(mu_);
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_USER_LIMITS_H_
