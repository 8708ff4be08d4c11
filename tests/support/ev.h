// Ev: one kq_kevent (the ABI's struct) built in a line, for the tests that
// drive the core in-process and those that drive the device's ioctls.
#ifndef KQUEUED_TESTS_SUPPORT_EV_H_
#define KQUEUED_TESTS_SUPPORT_EV_H_

#include <cstdint>

#include "proto/kqueue_abi.h"

namespace kqd {
namespace testing {

inline kq_kevent Ev(uint64_t ident, uint32_t filter, uint32_t flags, uint32_t fflags = 0,
                    int64_t data = 0, uint64_t udata = 0) {
  kq_kevent e{};
  e.ident = ident;
  e.filter = filter;
  e.flags = flags;
  e.fflags = fflags;
  e.data = data;
  e.udata = udata;
  return e;
}

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_EV_H_
