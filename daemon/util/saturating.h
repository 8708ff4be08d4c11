// Saturating int64 arithmetic for event counts and deadlines: a result out
// of range clamps to INT64_MAX or INT64_MIN (by the sign of the true
// result) instead of wrapping.
#ifndef KQUEUED_DAEMON_UTIL_SATURATING_H_
#define KQUEUED_DAEMON_UTIL_SATURATING_H_

#include <cstdint>

namespace kqd {

inline int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t r;
  // Overflow needs both operands of one sign: b's sign is the result's.
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

inline int64_t SaturatingMul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return (a < 0) != (b < 0) ? INT64_MIN : INT64_MAX;
  return r;
}

}  // namespace kqd

#endif  // KQUEUED_DAEMON_UTIL_SATURATING_H_
