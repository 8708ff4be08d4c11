// FilterRegistry: filter numbers and names, as the seed's sys_kfilters and
// user_kfilters: system filters 0..EVFILT_SYSCOUNT-1 (some without an
// implementation: EV_ADD on them is EINVAL), and filters registered at run
// time, numbered from EVFILT_SYSCOUNT up and never reused.
#ifndef KQUEUED_DAEMON_CORE_FILTER_REGISTRY_H_
#define KQUEUED_DAEMON_CORE_FILTER_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/core/filter_ops.h"
#include "daemon/util/mutex.h"

namespace kqd {

// Held by each knote of a filter: while any exists, the filter is busy and
// cannot be unregistered.
class FilterRegistration {
 public:
  FilterRegistration(std::shared_ptr<FilterOps> ops, std::shared_ptr<int> users)
      : ops_(std::move(ops)), users_(std::move(users)) {}
  FilterOps* ops() const { return ops_.get(); }

 private:
  std::shared_ptr<FilterOps> ops_;  // keeps a plug-in filter's code alive
  std::shared_ptr<int> users_;      // use_count() - 1 = knotes using it
};

class FilterRegistry {
 public:
  FilterRegistry();

  // A system filter (number < EVFILT_SYSCOUNT). `ops` may be null: the
  // filter has a name and a number but EV_ADD on it is EINVAL.
  void AddSystem(uint32_t number, const std::string& name,
                 std::shared_ptr<FilterOps> ops) EXCLUDES(mu_);

  // kfilter_register: EINVAL for an empty/too long name or null ops,
  // EEXIST for a taken name.
  int Register(const std::string& name, std::shared_ptr<FilterOps> ops,
               uint32_t* number) EXCLUDES(mu_);
  // kfilter_unregister: EINVAL for a system filter, ENOENT for an unknown
  // name, EBUSY while knotes use it.
  int Unregister(const std::string& name) EXCLUDES(mu_);

  // KFILTER_BYNAME / KFILTER_BYFILTER: 0 or ENOENT.
  int NumberOf(const std::string& name, uint32_t* number) const EXCLUDES(mu_);
  int NameOf(uint32_t number, std::string* name) const EXCLUDES(mu_);

  // For a new knote: EINVAL if the filter is unknown or not implemented.
  int Acquire(uint32_t number, std::shared_ptr<FilterRegistration>* out) const EXCLUDES(mu_);

 private:
  struct Entry {
    std::string name;
    std::shared_ptr<FilterOps> ops;
    std::shared_ptr<int> users = std::make_shared<int>(0);
    bool system = false;
  };

  mutable Mutex mu_;  // a leaf: taken under a kqueue's lock (EV_ADD), nothing under it
  std::map<uint32_t, Entry> entries_ GUARDED_BY(mu_);
  uint32_t next_number_ GUARDED_BY(mu_) = EVFILT_SYSCOUNT;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_FILTER_REGISTRY_H_
