// The daemon's descriptor budget.
#ifndef KQUEUED_DAEMON_OS_FD_LIMIT_H_
#define KQUEUED_DAEMON_OS_FD_LIMIT_H_

#include <sys/resource.h>

namespace kqd {

// Raises the soft RLIMIT_NOFILE to the hard limit (the fd filters reserve
// descriptor numbers at the top of the table; use all we may have).
// Returns the soft limit in force afterwards, or 0 if it cannot be read.
// Idempotent.
rlim_t RaiseFdLimit();

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_FD_LIMIT_H_
