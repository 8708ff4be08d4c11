#include "daemon/filters/timer/timer_filter.h"

#include <errno.h>

#include <algorithm>
#include <utility>

#include "daemon/core/process_context.h"
#include "daemon/core/reactor.h"
#include "daemon/core/user_limits.h"
#include "daemon/util/saturating.h"

namespace kqd {
namespace {

constexpr uint32_t kValidFflags = NOTE_TIMER_UNITMASK | NOTE_ABSTIME;

// `value` in the NOTE_* unit `unit`, in nanoseconds, saturating: an absurd
// value must not wrap around into a small (or negative) one.
int64_t ToNanoseconds(int64_t value, uint32_t unit) {
  switch (unit) {
    case NOTE_SECONDS:
      return SaturatingMul(value, 1000000000);
    case NOTE_USECONDS:
      return SaturatingMul(value, 1000);
    case NOTE_NSECONDS:
      return value;
    default:  // NOTE_MSECONDS
      return SaturatingMul(value, 1000000);
  }
}

// A registration's fflags and data, validated and converted.
struct TimerSpec {
  Reactor::Clock clock = Reactor::Clock::kMonotonic;
  int64_t period_ns = 0;    // > 0: periodic; 0: once, at abs_deadline_ns
  int64_t abs_deadline_ns = 0;  // NOTE_ABSTIME only (CLOCK_REALTIME)
};

int ParseSpec(uint32_t fflags, int64_t data, TimerSpec* spec) {
  if (fflags & ~kValidFflags) return EINVAL;
  const int64_t ns = ToNanoseconds(data, fflags & NOTE_TIMER_UNITMASK);
  if (fflags & NOTE_ABSTIME) {
    // Any value is a valid time; one in the past (even before the epoch)
    // just fires at once.
    spec->clock = Reactor::Clock::kRealtime;
    spec->period_ns = 0;
    spec->abs_deadline_ns = ns;
    return 0;
  }
  if (data <= 0) return EINVAL;  // the seed: a zero period is EINVAL
  // Relative timers run on the monotonic clock: setting the date must not
  // stretch or shrink a period.
  spec->clock = Reactor::Clock::kMonotonic;
  spec->period_ns = std::min(ns, kTimerMaxPeriodNs);
  return 0;
}

// One timer. Its expiration count lives in kn.kev.data itself (as the
// seed's kn_data++), so the core's EV_CLEAR reset after retrieval is also
// the filter's reset.
//
// A callback captures the generation it was armed with and passes it as
// the Event hint. Stop() and every re-arm change the generation, so a
// callback the reactor had already dispatched when the timer was deleted
// or restarted is recognised as stale under the kqueue lock and ignored.
class TimerState : public KnoteState {
 public:
  TimerState(Reactor* reactor, UserLimits* limits, uid_t uid,
             std::unique_ptr<UserLimits::Charge> charge)
      : reactor_(reactor), limits_(limits), uid_(uid), charge_(std::move(charge)) {}

  // (Re)starts the timer from now. An absolute time already past counts
  // one expiration at once, with no reactor timer at all.
  // ENOMEM if it would be one fast timer more than the user may have.
  int Start(Knote& kn, const TimerSpec& spec) {
    const bool fast = spec.period_ns > 0 && spec.period_ns < kTimerFastPeriodNs;
    if (fast && !fast_charge_) {
      fast_charge_ = limits_->Take(uid_, Resource::kFastTimers);
      if (!fast_charge_) return ENOMEM;
    } else if (!fast) {
      fast_charge_.reset();
    }
    Stop();
    clock_ = spec.clock;
    period_ns_ = spec.period_ns;
    const int64_t now = Reactor::Now(clock_);
    if (period_ns_ == 0) {
      deadline_ns_ = spec.abs_deadline_ns;
      if (deadline_ns_ <= now) {
        kn.kev.data = 1;
        return 0;
      }
    } else {
      deadline_ns_ = now + period_ns_;  // period is clamped: cannot overflow
    }
    Arm(kn, now);
    return 0;
  }

  // Whether Start(spec) would succeed; takes the fast-timer charge it needs.
  int CanStart(const TimerSpec& spec) {
    const bool fast = spec.period_ns > 0 && spec.period_ns < kTimerFastPeriodNs;
    if (fast && !fast_charge_) {
      fast_charge_ = limits_->Take(uid_, Resource::kFastTimers);
      if (!fast_charge_) return ENOMEM;
    }
    return 0;
  }

  // Cancels the pending callback, if any.
  void Stop() {
    if (timer_id_ != 0) reactor_->CancelTimer(timer_id_);
    timer_id_ = 0;
    generation_++;
  }

  // The callback armed as `generation` ran. Counts the expirations and
  // re-arms a periodic timer; false if the callback was stale or early.
  bool Expire(Knote& kn, long generation) {
    if (generation != generation_ || timer_id_ == 0) return false;
    timer_id_ = 0;  // the reactor forgets a timer once it has run it
    const int64_t now = Reactor::Now(clock_);
    if (now < deadline_ns_) {
      // Only a realtime clock set backwards gets here: wait on.
      Arm(kn, now);
      return false;
    }
    if (period_ns_ == 0) {
      kn.kev.data = SaturatingAdd(kn.kev.data, 1);
      return true;
    }
    // A late loop counts the periods it missed, and the next deadline stays
    // on the original grid, so lateness never accumulates into drift. A
    // one-shot knote expires once, however late (the seed does not re-arm
    // its callout): data 1, as with an idle loop.
    const int64_t expirations =
        (kn.kev.flags & EV_ONESHOT) ? 1 : 1 + (now - deadline_ns_) / period_ns_;
    kn.kev.data = SaturatingAdd(kn.kev.data, expirations);
    deadline_ns_ += expirations * period_ns_;  // in (now, now + period]
    // A one-shot knote is deleted when retrieved; it needs no more ticks.
    if (!(kn.kev.flags & EV_ONESHOT)) Arm(kn, now);
    return true;
  }

  // Gives the user's timer slot back (at Detach, not when the knote is
  // finally freed, which an in-flight callback may delay).
  void ReleaseCharge() {
    charge_.reset();
    fast_charge_.reset();
  }

 private:
  void Arm(Knote& kn, int64_t now) {
    generation_++;
    int64_t wake = deadline_ns_;
    if (fast_charge_) {
      // The user's fast timers share the loop (timer_filter.h).
      const int64_t fast = static_cast<int64_t>(
          std::max<uint64_t>(1, limits_->InUse(uid_, Resource::kFastTimers)));
      const int64_t floor_ns = std::min(fast * kTimerMinWakeupNs, kTimerFastPeriodNs * 100);
      if (period_ns_ < floor_ns) wake = std::max(wake, now + floor_ns);
    }
    std::weak_ptr<Knote> weak = kn.weak_from_this();
    const long generation = generation_;
    timer_id_ = reactor_->AddTimer(clock_, wake, [weak, generation] {
      Knote::Notify(weak, generation);
    });
  }

  Reactor* const reactor_;
  UserLimits* const limits_;
  const uid_t uid_;                              // who the timer is charged to
  std::unique_ptr<UserLimits::Charge> charge_;  // one of the user's timers
  // One of the user's fast timers, while the period is below
  // kTimerFastPeriodNs; null otherwise.
  std::unique_ptr<UserLimits::Charge> fast_charge_;
  Reactor::Clock clock_ = Reactor::Clock::kMonotonic;
  int64_t period_ns_ = 0;    // 0: fires once (NOTE_ABSTIME)
  int64_t deadline_ns_ = 0;  // the next expiration not yet counted
  uint64_t timer_id_ = 0;    // the reactor's; 0 when none is armed
  // Hint of the armed callback; always >= 1, never kHintEvaluate.
  long generation_ = 0;
};

class TimerFilter : public FilterOps {
 public:
  explicit TimerFilter(Runtime* runtime) : runtime_(runtime) {}

  int Attach(Knote& kn) override {
    TimerSpec spec;
    if (int err = ParseSpec(kn.sfflags, kn.sdata, &spec)) return err;
    auto charge = runtime_->limits().Take(kn.owner->euid(), Resource::kTimers);
    if (!charge) return ENOMEM;  // the seed's kq_calloutmax
    // NetBSD's filt_timerattach sets EV_CLEAR for relative timers only: an
    // absolute timer that has fired stays triggered (level) unless the
    // caller asked for EV_CLEAR (or EV_ONESHOT) itself.
    if (!(kn.sfflags & NOTE_ABSTIME)) kn.kev.flags |= EV_CLEAR;
    kn.state = std::make_unique<TimerState>(&runtime_->reactor(), &runtime_->limits(),
                                            kn.owner->euid(), std::move(charge));
    if (int err = kn.state_as<TimerState>()->Start(kn, spec)) {
      kn.state.reset();
      return err;
    }
    return 0;
  }

  void Detach(Knote& kn) override {
    TimerState* st = kn.state_as<TimerState>();
    st->Stop();
    st->ReleaseCharge();
  }

  bool Event(Knote& kn, long hint) override {
    if (hint != kHintEvaluate && !kn.state_as<TimerState>()->Expire(kn, hint)) {
      return false;
    }
    kn.kev.fflags = 0;
    return kn.kev.data > 0;
  }

  // EV_ADD on an existing timer restarts it with the new settings and drops
  // the count (NetBSD 10). A bad new setting leaves the old timer running.
  int Touch(Knote& kn, const kq_kevent& change) override {
    // Changes without EV_ADD (enable, disable) never re-arm a timer.
    if (!(change.flags & EV_ADD)) return 0;
    TimerSpec spec;
    if (int err = ParseSpec(change.fflags, change.data, &spec)) return err;
    // Checked before anything changes: a refused restart (ENOMEM, one fast
    // timer too many) leaves the old timer running.
    if (int err = kn.state_as<TimerState>()->CanStart(spec)) return err;
    kn.sfflags = change.fflags;
    kn.sdata = change.data;
    if (!(kn.sfflags & NOTE_ABSTIME)) kn.kev.flags |= EV_CLEAR;  // as at attach
    // An event still queued with the old count is dropped when collected:
    // the core re-evaluates it and finds nothing. (An EV_ONESHOT one is not
    // re-evaluated, and would be reported with data 0.)
    kn.kev.data = 0;
    return kn.state_as<TimerState>()->Start(kn, spec);
  }

  // EV_CLEAR is implied for relative timers only: Attach sets it.

 private:
  Runtime* const runtime_;
};

}  // namespace

std::shared_ptr<FilterOps> MakeTimerFilter(Runtime* runtime) {
  return std::make_shared<TimerFilter>(runtime);
}

}  // namespace kqd
