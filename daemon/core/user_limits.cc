#include "daemon/core/user_limits.h"

namespace kqd {

LimitConfig LimitConfig::ForFdBudget(uint64_t fd_budget) {
  LimitConfig c;
  c.daemon_fds = fd_budget / 8 < 16 ? 16 : fd_budget / 8;
  // The fd filters spend one daemon descriptor per 64 watched open files
  // (fd_watch.h, shards): twice the budget in knotes costs a user at most
  // a thirty-second of the budget in descriptors, a quarter of its share.
  c.watched_fds = fd_budget * 2 < 16 ? 16 : fd_budget * 2;
  return c;
}

const char* ResourceName(Resource r) {
  switch (r) {
    case Resource::kKqueues: return "kqueues";
    case Resource::kKnotes: return "knotes";
    case Resource::kTimers: return "timers";
    case Resource::kFastTimers: return "fast timers";
    case Resource::kDaemonFds: return "daemon descriptors";
    case Resource::kKqueueNames: return "kqueue names";
    case Resource::kWatchedFds: return "watched descriptors";
    default: break;
  }
  return "resources";
}

void UserLimits::set_refusal_observer(RefusalObserver fn) {
  MutexLock l(mu_);
  on_refused_ = std::move(fn);
}

UserLimits::Charge::~Charge() { limits_->Give(uid_, resource_); }

uint64_t UserLimits::Ceiling(Resource r) const {
  switch (r) {
    case Resource::kKqueues: return config_.kqueues;
    case Resource::kKnotes: return config_.knotes;
    case Resource::kTimers: return config_.timers;
    case Resource::kFastTimers: return config_.timers;
    case Resource::kDaemonFds: return config_.daemon_fds;
    case Resource::kKqueueNames: return config_.kqueue_names;
    case Resource::kWatchedFds: return config_.watched_fds;
    case Resource::kCount: break;
  }
  return 0;
}

std::unique_ptr<UserLimits::Charge> UserLimits::Take(uid_t uid, Resource r) {
  RefusalObserver observer;
  uint64_t ceiling = 0;
  {
    MutexLock l(mu_);
    uint64_t& n = used_[uid][static_cast<int>(r)];
    ceiling = Ceiling(r);
    if (n < ceiling) {
      n++;
      return std::unique_ptr<Charge>(new Charge(shared_from_this(), uid, r));
    }
    observer = on_refused_;
  }
  if (observer) observer(uid, r, ceiling);
  return nullptr;
}

uint64_t UserLimits::InUse(uid_t uid, Resource r) const {
  MutexLock l(mu_);
  auto it = used_.find(uid);
  return it == used_.end() ? 0 : it->second[static_cast<int>(r)];
}

std::map<uid_t, UserLimits::Usage> UserLimits::AllInUse() const {
  MutexLock l(mu_);
  std::map<uid_t, Usage> out;
  for (const auto& [uid, used] : used_) {
    bool any = false;
    for (uint64_t n : used) any = any || n != 0;
    if (any) out.emplace(uid, used);
  }
  return out;
}

void UserLimits::Give(uid_t uid, Resource r) {
  MutexLock l(mu_);
  used_[uid][static_cast<int>(r)]--;
}

}  // namespace kqd
