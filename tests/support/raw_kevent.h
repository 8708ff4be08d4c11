// kevent(2) through the raw KQ_IOC_KEVENT ioctl, for tests that drive the
// device at the ioctl level (no client library involved).
#ifndef KQUEUED_TESTS_SUPPORT_RAW_KEVENT_H_
#define KQUEUED_TESTS_SUPPORT_RAW_KEVENT_H_

#include <errno.h>
#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>

#include "proto/kqueue_abi.h"
#include "tests/support/ev.h"

namespace kqd {
namespace testing {

// One kevent call; timeout_ms < 0 waits forever. Returns the ioctl's result
// (-1 with errno on failure, EINTR included).
inline int Kevent(int kq, const kq_kevent* changes, size_t nchanges, kq_kevent* events,
                  size_t nevents, long timeout_ms) {
  kq_kevent_args a{};
  a.changelist = reinterpret_cast<uint64_t>(changes);
  a.nchanges = nchanges;
  a.eventlist = reinterpret_cast<uint64_t>(events);
  a.nevents = nevents;
  if (timeout_ms >= 0) {
    a.flags = KQ_KEVENT_TIMEOUT;
    a.timeout_sec = timeout_ms / 1000;
    a.timeout_nsec = (timeout_ms % 1000) * 1000000L;
  }
  return ioctl(kq, KQ_IOC_KEVENT, &a);
}

// As Kevent, but a wait interrupted by a caught signal is simply resumed.
inline int KeventRetryingEintr(int kq, const kq_kevent* changes, size_t nchanges,
                               kq_kevent* events, size_t nevents, long timeout_ms) {
  for (;;) {
    int n = Kevent(kq, changes, nchanges, events, nevents, timeout_ms);
    if (n >= 0 || errno != EINTR) return n;
  }
}

// Applies one change; returns 0 or its errno.
inline int Change(int kq, const kq_kevent& change) {
  return Kevent(kq, &change, 1, nullptr, 0, 0) < 0 ? errno : 0;
}

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_RAW_KEVENT_H_
