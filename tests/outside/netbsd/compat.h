/*
 * Force-included (-include) before every NetBSD test source built by
 * tests/outside/run-netbsd.sh: what NetBSD's libc and headers give those
 * programs and glibc does not. Written for kqueued; nothing here touches
 * kqueue itself, which comes from the project's <sys/event.h>.
 */
#ifndef KQUEUED_OUTSIDE_NETBSD_COMPAT_H_
#define KQUEUED_OUTSIDE_NETBSD_COMPAT_H_

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

/* NetBSD's headers pull these in transitively; the tests rely on it. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

/* <sys/cdefs.h> identification strings: nothing to keep on Linux. */
#define __RCSID(s) extern int kqueued_outside_rcsid_unused
#define __COPYRIGHT(s) extern int kqueued_outside_copyright_unused

/* poll(2)'s "forever". */
#ifndef INFTIM
#define INFTIM (-1)
#endif

/* NetBSD's three-argument timespec arithmetic: res = a - b. */
#ifndef timespecsub
#define timespecsub(a, b, res)                      \
  do {                                              \
    (res)->tv_sec = (a)->tv_sec - (b)->tv_sec;      \
    (res)->tv_nsec = (a)->tv_nsec - (b)->tv_nsec;   \
    if ((res)->tv_nsec < 0) {                       \
      (res)->tv_sec--;                              \
      (res)->tv_nsec += 1000000000L;                \
    }                                               \
  } while (0)
#endif

/* strlcpy/strlcat (glibc has them only from 2.38). Return the length of
 * the string they tried to create, as on the BSDs. */
static inline size_t kqueued_outside_strlcpy(char* dst, const char* src, size_t size) {
  size_t len = strlen(src);
  if (size > 0) {
    size_t n = len < size - 1 ? len : size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
  }
  return len;
}
static inline size_t kqueued_outside_strlcat(char* dst, const char* src, size_t size) {
  size_t have = strnlen(dst, size);
  if (have == size) return size + strlen(src);
  return have + kqueued_outside_strlcpy(dst + have, src, size - have);
}
#define strlcpy kqueued_outside_strlcpy
#define strlcat kqueued_outside_strlcat

/* BSD sockaddrs carry a length byte first; Linux's have none. The tests
 * only set it in initialisers, and Linux ignores sin_zero, so the byte is
 * put there. */
#define sin_len sin_zero[0]

/* On NetBSD (as on every BSD) accept(2) gives the new socket the listening
 * socket's O_NONBLOCK; Linux's accept never does. */
static inline int kqueued_outside_accept(int fd, struct sockaddr* addr, socklen_t* len) {
  int fl = fcntl(fd, F_GETFL);
  return accept4(fd, addr, len, (fl >= 0 && (fl & O_NONBLOCK)) ? SOCK_NONBLOCK : 0);
}
#define accept kqueued_outside_accept

#endif /* KQUEUED_OUTSIDE_NETBSD_COMPAT_H_ */
