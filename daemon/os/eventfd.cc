#include "daemon/os/eventfd.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace kqd {

ScopedFd OpenEventfd() { return ScopedFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)); }

void RaiseEventfd(int efd) {
  const uint64_t one = 1;
  // Fails only with EAGAIN at a counter near 2^64 - 1, which stays readable.
  ssize_t n = write(efd, &one, sizeof one);
  (void)n;
}

void DrainEventfd(int efd) {
  uint64_t value = 0;
  // EAGAIN: it was zero already.
  ssize_t n = read(efd, &value, sizeof value);
  (void)n;
}

int AddToEpoll(int epoll_copy, int fd, uint64_t tag) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag;
  return epoll_ctl(epoll_copy, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : errno;
}

}  // namespace kqd
