// Runtime: what all kqueues of one daemon (or one unit test) share — the
// event loop, the filter registry, the per-user limits and the log. Passed
// explicitly: there is no global mutable state.
#ifndef KQUEUED_DAEMON_CORE_RUNTIME_H_
#define KQUEUED_DAEMON_CORE_RUNTIME_H_

#include <memory>

#include "daemon/core/filter_registry.h"
#include "daemon/core/reactor.h"
#include "daemon/core/user_limits.h"
#include "daemon/os/logger.h"
#include "daemon/util/mutex.h"

namespace kqd {

class Runtime {
 public:
  explicit Runtime(LimitConfig limits = LimitConfig())
      : limits_(UserLimits::Create(limits)) {
    // Reaching a per-user limit is worth a (rate-limited) line.
    limits_->set_refusal_observer([this](uid_t uid, Resource r, uint64_t ceiling) {
      log_.ClientLog(LogLevel::kWarning, uid, "per-user limit of %llu %s reached",
                     static_cast<unsigned long long>(ceiling), ResourceName(r));
    });
  }
  ~Runtime() { limits_->set_refusal_observer(nullptr); }
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  Reactor& reactor() { return reactor_; }
  FilterRegistry& filters() { return filters_; }
  UserLimits& limits() { return *limits_; }
  // The daemon's log (stderr at level notice until main configures it).
  Logger& log() { return log_; }

  // Serialises changes to the graph of kqueues watching kqueues (every
  // Kqueue's watchers_), so that two concurrent EV_ADDs cannot close a cycle
  // between them. Taken under a kqueue's lock (EVFILT_READ on a kqueue),
  // nothing under it.
  Mutex& nesting_mutex() RETURN_CAPABILITY(nesting_mu_) { return nesting_mu_; }

 private:
  Reactor reactor_;
  FilterRegistry filters_;
  std::shared_ptr<UserLimits> limits_;
  Mutex nesting_mu_;
  Logger log_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_RUNTIME_H_
