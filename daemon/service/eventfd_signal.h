// EventfdSignal: a kqueue's LocalSignal (daemon/core/local_signal.h) as an
// eventfd only the daemon holds, which KQ_IOC_LOCAL_ATTACH put into the
// local owner's epoll instance: readable while the counter is non-zero. The
// descriptor is one Resource::kDaemonFds of the attaching user's, held for
// as long as this object lives; closing it takes the item out of the
// owner's epoll instance too (the kernel drops an epoll item with its file).
#ifndef KQUEUED_DAEMON_SERVICE_EVENTFD_SIGNAL_H_
#define KQUEUED_DAEMON_SERVICE_EVENTFD_SIGNAL_H_

#include <memory>
#include <utility>

#include "daemon/core/local_signal.h"
#include "daemon/core/user_limits.h"
#include "daemon/os/eventfd.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

class EventfdSignal : public LocalSignal {
 public:
  // `efd`: a fresh eventfd (counter 0); `charge`: its kDaemonFds charge.
  EventfdSignal(ScopedFd efd, std::unique_ptr<UserLimits::Charge> charge)
      : charge_(std::move(charge)), efd_(std::move(efd)) {}

  // Raises (write 1) or drains (read) the counter: a write is visible to
  // epoll_wait when it returns.
  void Set(bool readable) override {
    if (readable) {
      RaiseEventfd(efd_.get());
    } else {
      DrainEventfd(efd_.get());
    }
  }

  int fd() const { return efd_.get(); }

 private:
  // Declared before efd_, so given back after the descriptor is closed.
  const std::unique_ptr<UserLimits::Charge> charge_;
  const ScopedFd efd_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_EVENTFD_SIGNAL_H_
