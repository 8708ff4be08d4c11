// eventfd(2) as a level: a counter that is readable (non-zero) or not, and
// the one epoll operation the daemon performs on a client's epoll instance.
#ifndef KQUEUED_DAEMON_OS_EVENTFD_H_
#define KQUEUED_DAEMON_OS_EVENTFD_H_

#include <cstdint>

#include "daemon/util/scoped_fd.h"

namespace kqd {

// A new eventfd, counter 0, EFD_NONBLOCK | EFD_CLOEXEC. Invalid with errno
// set on failure (EMFILE, ENFILE, ENOMEM).
ScopedFd OpenEventfd();

// Makes the counter non-zero (adds 1; it never nears the maximum when only
// RaiseEventfd/DrainEventfd touch it). Never blocks.
void RaiseEventfd(int efd);

// Makes the counter zero (one read). Never blocks.
void DrainEventfd(int efd);

// epoll_ctl(epoll_copy, EPOLL_CTL_ADD, fd, {EPOLLIN, .data.u64 = tag}):
// level-triggered. Returns 0 or the kernel's errno — EINVAL when
// `epoll_copy` is not an epoll instance.
int AddToEpoll(int epoll_copy, int fd, uint64_t tag);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_EVENTFD_H_
