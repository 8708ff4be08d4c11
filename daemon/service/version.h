#ifndef KQUEUED_DAEMON_SERVICE_VERSION_H_
#define KQUEUED_DAEMON_SERVICE_VERSION_H_

namespace kqd {
// Reported by KQ_IOC_VERSION next to KQ_ABI_VERSION.
inline constexpr char kDaemonVersion[] = "kqueued 0.1.0";
}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_VERSION_H_
