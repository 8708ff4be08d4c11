// EVFILT_TIMER: the seed's filt_timer*, with NetBSD 10's units.
//
// ident names the timer; data is its period in the unit fflags selects
// (NOTE_MSECONDS, the default, NOTE_SECONDS, NOTE_USECONDS, NOTE_NSECONDS).
// With NOTE_ABSTIME data is instead an absolute CLOCK_REALTIME time and the
// timer fires once (at once, with data 1, if that time has passed).
// Reported data is the number of expirations since the last retrieval.
// EV_CLEAR is implied for relative timers only (NetBSD's filt_timerattach):
// an absolute timer without EV_CLEAR stays triggered once it has fired. EV_ADD on an existing timer restarts it with the new
// settings and drops the count. Disabled timers keep counting, as on BSD, so
// EV_ENABLE reports what expired meanwhile.
//
// Errors: data <= 0 for a relative timer, or fflags bits beyond the unit and
// NOTE_ABSTIME, are EINVAL; more than LimitConfig::timers timers for one
// effective uid is ENOMEM.
//
// Every timer is an entry in the Reactor's per-clock heap: thousands of
// timers share its one timerfd.
#ifndef KQUEUED_DAEMON_FILTERS_TIMER_TIMER_FILTER_H_
#define KQUEUED_DAEMON_FILTERS_TIMER_TIMER_FILTER_H_

#include <cstdint>
#include <memory>

#include "daemon/core/filter_ops.h"
#include "daemon/core/runtime.h"

namespace kqd {

// Relative periods above this (100 years) are clamped to it, so that
// "now + period" can never overflow int64 nanoseconds.
constexpr int64_t kTimerMaxPeriodNs = INT64_C(100) * 365 * 24 * 3600 * 1000000000;

// A periodic timer wakes the event loop at most once per this interval;
// shorter periods are still counted exactly (expirations are computed from
// the time elapsed, not from the number of wake-ups).
constexpr int64_t kTimerMinWakeupNs = 250 * 1000;

// The loop time a user's timers may cost is bounded, not each timer's:
// a timer whose period is below kTimerFastPeriodNs is "fast" and charged
// to its owner's uid (Resource::kFastTimers), and each fast timer wakes the
// loop at most once per (the owner's fast timers) x kTimerMinWakeupNs. So
// one user's fast timers together wake the loop at most 1 / kTimerMinWakeupNs
// = 4000 times a second, however many there are and however short their
// periods: 100 timers of 1 ns wake it as often as one timer of 250 us does.
// Expirations are still counted exactly (data), they are only delivered in
// coarser steps; NetBSD rounds periods up to a clock tick (10 ms at HZ=100),
// coarser than this floor for any user with fewer than 100 fast timers.
constexpr int64_t kTimerFastPeriodNs = INT64_C(10) * 1000 * 1000;

// The filter ops; `runtime` (its reactor and limits) must outlive them.
std::shared_ptr<FilterOps> MakeTimerFilter(Runtime* runtime);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_TIMER_TIMER_FILTER_H_
