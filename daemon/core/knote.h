// Knote: one registration, keyed by (ident, filter) within a kqueue.
//
// Every field is guarded by the owning kqueue's lock; filter hooks are called
// with that lock held. Event sources (timers, epoll, netlink...) hold only a
// weak_ptr<Knote> and report through Knote::Notify, which takes the lock and
// ignores knotes already detached, so a knote is never used after it is
// deleted (the use-after-free NetBSD 1.65 left open).
#ifndef KQUEUED_DAEMON_CORE_KNOTE_H_
#define KQUEUED_DAEMON_CORE_KNOTE_H_

#include <cstdint>
#include <list>
#include <memory>

#include "daemon/core/user_limits.h"
#include "proto/kqueue_abi.h"

namespace kqd {

class FilterOps;
class FilterRegistration;
class Kqueue;
class ProcessContext;

// What a filter keeps per knote (a timer's deadline, an fd's identity...).
class KnoteState {
 public:
  virtual ~KnoteState() = default;
};

// Hints passed to FilterOps::Event. Filters define their own values >= 1.
constexpr long kHintEvaluate = 0;  // re-evaluate (on scan, on EV_ADD)

class Knote : public std::enable_shared_from_this<Knote> {
 public:
  enum Status : uint32_t {
    kActive = 1u << 0,    // the event condition holds (or held, for EV_CLEAR)
    kQueued = 1u << 1,    // on the kqueue's active queue
    kDisabled = 1u << 2,  // EV_DISABLE: not returned until EV_ENABLE
    kDetached = 1u << 3,  // deleted: event sources must ignore it
    kGone = 1u << 4,      // its fd was closed: delete silently, report nothing
  };

  // What will be reported: ident, filter, flags as stored, udata; the filter
  // sets fflags and data (and may add EV_EOF to flags).
  kq_kevent kev{};
  uint32_t sfflags = 0;  // fflags given at registration
  int64_t sdata = 0;     // data given at registration
  uint32_t status = 0;

  FilterOps* ops = nullptr;
  std::shared_ptr<ProcessContext> owner;  // who registered it
  std::weak_ptr<Kqueue> kq;
  std::unique_ptr<KnoteState> state;  // the filter's own

  // Reports an event-source callback: under the kqueue's lock, runs the
  // filter's Event(hint) and activates the knote if it returns true.
  // Safe to call from any thread, any number of times, after deletion too.
  static void Notify(const std::weak_ptr<Knote>& kn, long hint);

  template <typename T>
  T* state_as() {
    return static_cast<T*>(state.get());
  }

 private:
  friend class Kqueue;
  std::shared_ptr<FilterRegistration> registration_;  // keeps the filter busy
  std::unique_ptr<UserLimits::Charge> charge_;        // one of the user's knotes
  std::unique_ptr<UserLimits::Charge> fd_charge_;     // descriptor filters: kWatchedFds
  std::list<std::shared_ptr<Knote>>::iterator queue_pos_;
  // The kqueue's evaluation clock when the knote was last evaluated, and
  // whether that evaluation said "fire" (see Kqueue::EvaluateLocked).
  uint64_t evaluated_at_ = 0;
  bool evaluated_fire_ = false;
  // Collected by the queue's local owner itself (ABI 4; Kqueue::SetLocalLocked).
  bool local_ = false;
  // The hint of a source's wake-up the core passed on unevaluated (a local
  // knote's, Kqueue::NotifyKnote), for the next evaluation to use instead of
  // kHintEvaluate; kHintEvaluate when there is none.
  long unevaluated_wake_ = kHintEvaluate;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_KNOTE_H_
