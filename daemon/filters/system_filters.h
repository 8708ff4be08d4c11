// The system filter table (the seed's sys_kfilters): every EVFILT_* number
// below EVFILT_SYSCOUNT with its name and, where implemented, its filterops.
#ifndef KQUEUED_DAEMON_FILTERS_SYSTEM_FILTERS_H_
#define KQUEUED_DAEMON_FILTERS_SYSTEM_FILTERS_H_

#include "daemon/core/runtime.h"

namespace kqd {

// Fills runtime->filters() with the system filters. Call once, before the
// runtime serves any kqueue.
void RegisterSystemFilters(Runtime* runtime);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_SYSTEM_FILTERS_H_
