#include "daemon/core/user_limits.h"

namespace kqd {

UserLimits::Charge::~Charge() { limits_->Give(uid_, resource_); }

uint64_t UserLimits::Ceiling(Resource r) const {
  switch (r) {
    case Resource::kKqueues: return config_.kqueues;
    case Resource::kKnotes: return config_.knotes;
    case Resource::kTimers: return config_.timers;
    case Resource::kCount: break;
  }
  return 0;
}

std::unique_ptr<UserLimits::Charge> UserLimits::Take(uid_t uid, Resource r) {
  MutexLock l(mu_);
  uint64_t& n = used_[uid][static_cast<int>(r)];
  if (n >= Ceiling(r)) return nullptr;
  n++;
  return std::unique_ptr<Charge>(new Charge(shared_from_this(), uid, r));
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
