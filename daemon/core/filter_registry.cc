#include "daemon/core/filter_registry.h"

#include <errno.h>

namespace kqd {

FilterRegistry::FilterRegistry() = default;

void FilterRegistry::AddSystem(uint32_t number, const std::string& name,
                               std::shared_ptr<FilterOps> ops) {
  MutexLock l(mu_);
  Entry& e = entries_[number];
  e.name = name;
  e.ops = std::move(ops);
  e.system = true;
}

int FilterRegistry::Register(const std::string& name,
                             std::shared_ptr<FilterOps> ops, uint32_t* number) {
  if (name.empty() || name.size() >= KFILTER_MAXNAME || ops == nullptr)
    return EINVAL;
  MutexLock l(mu_);
  for (const auto& [num, e] : entries_)
    if (e.name == name) return EEXIST;
  uint32_t n = next_number_++;
  Entry& e = entries_[n];
  e.name = name;
  e.ops = std::move(ops);
  *number = n;
  return 0;
}

int FilterRegistry::Unregister(const std::string& name) {
  MutexLock l(mu_);
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->second.name != name) continue;
    if (it->second.system) return EINVAL;
    if (it->second.users.use_count() > 1) return EBUSY;
    entries_.erase(it);  // its number is never handed out again
    return 0;
  }
  return ENOENT;
}

int FilterRegistry::NumberOf(const std::string& name, uint32_t* number) const {
  MutexLock l(mu_);
  for (const auto& [num, e] : entries_) {
    if (e.name == name) {
      *number = num;
      return 0;
    }
  }
  return ENOENT;
}

int FilterRegistry::NameOf(uint32_t number, std::string* name) const {
  MutexLock l(mu_);
  auto it = entries_.find(number);
  if (it == entries_.end()) return ENOENT;
  *name = it->second.name;
  return 0;
}

int FilterRegistry::Acquire(uint32_t number,
                            std::shared_ptr<FilterRegistration>* out) const {
  MutexLock l(mu_);
  auto it = entries_.find(number);
  if (it == entries_.end() || it->second.ops == nullptr) return EINVAL;
  *out = std::make_shared<FilterRegistration>(it->second.ops, it->second.users);
  return 0;
}

}  // namespace kqd
