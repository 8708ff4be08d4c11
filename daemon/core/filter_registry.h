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
                 std::shared_ptr<FilterOps> ops);

  // kfilter_register: EINVAL for an empty/too long name or null ops,
  // EEXIST for a taken name.
  int Register(const std::string& name, std::shared_ptr<FilterOps> ops,
               uint32_t* number);
  // kfilter_unregister: EINVAL for a system filter, ENOENT for an unknown
  // name, EBUSY while knotes use it.
  int Unregister(const std::string& name);

  // KFILTER_BYNAME / KFILTER_BYFILTER: 0 or ENOENT.
  int NumberOf(const std::string& name, uint32_t* number) const;
  int NameOf(uint32_t number, std::string* name) const;

  // For a new knote: EINVAL if the filter is unknown or not implemented.
  int Acquire(uint32_t number, std::shared_ptr<FilterRegistration>* out) const;

 private:
  struct Entry {
    std::string name;
    std::shared_ptr<FilterOps> ops;
    std::shared_ptr<int> users = std::make_shared<int>(0);
    bool system = false;
  };

  mutable std::mutex mu_;  // guards entries_ and next_number_
  std::map<uint32_t, Entry> entries_;
  uint32_t next_number_ = EVFILT_SYSCOUNT;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_FILTER_REGISTRY_H_
