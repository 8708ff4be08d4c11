/*
 * kqueue(), kqueue1() and kevent() on top of the kqueued device.
 *
 * Plain C with no dependency beyond libc, so libkqueue.so can be linked into
 * any program (no libstdc++). See <sys/event.h> for the errno contract.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* secure_getenv */
#endif

#include <sys/event.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Which device kqueue() opens. secure_getenv: a set-user-ID program must not
 * be pointed at a "daemon" of the invoking user's choosing. */
static const char *DevicePath(void) {
  const char *path = secure_getenv(KQ_DEVICE_ENV);
  return (path != NULL && path[0] != '\0') ? path : KQ_DEFAULT_DEVICE;
}

/* FNV-1a; never 0, so 0 can mean "nothing verified yet". */
static uint64_t HashPath(const char *path) {
  uint64_t h = 14695981039346656037ull;
  for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
    h ^= *p;
    h *= 1099511628211ull;
  }
  return h != 0 ? h : 1;
}

/*
 * The ABI handshake is done once per process and device path, not on every
 * kqueue(): it costs a daemon round trip. Only a success is remembered, so a
 * daemon started later is found. Keyed by a hash of the path rather than a
 * copy: lock-free, no allocation, and safe across fork(); tests switch
 * $KQUEUE_DEVICE between calls, and a new path must be checked again.
 */
static _Atomic uint64_t verified_path_hash = 0;

/* Errors from open(2) or the first ioctl that mean "nobody serves kqueues
 * here", as opposed to a real failure the caller should see. */
static int IsNoService(int err) {
  return err == ENOENT || err == ENXIO || err == ENODEV || err == ENOTCONN ||
         err == ECONNREFUSED || err == ENOTTY;
}

/* Closes fd without disturbing errno. */
static void CloseQuietly(int fd) {
  int saved = errno;
  close(fd);
  errno = saved;
}

/* 0 if fd is a kqueued device speaking our ABI; else -1 with errno. */
static int CheckVersion(int fd) {
  struct kq_version version;
  int rc;
  memset(&version, 0, sizeof version);
  do {
    rc = ioctl(fd, KQ_IOC_VERSION, &version);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    /* EINVAL, EIO...: whatever answered is not our daemon either. */
    errno = ENOSYS;
    return -1;
  }
  /* A daemon of a later ABI version serves every earlier version's ioctls
   * unchanged (docs/abi.md); an older one may lack some of ours. */
  if (version.abi_version < KQ_ABI_VERSION) {
    errno = EPROTO;
    return -1;
  }
  return 0;
}

static int OpenKqueue(int open_flags) {
  const char *path = DevicePath();
  int fd;
  do {
    fd = open(path, O_RDWR | open_flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (IsNoService(errno)) errno = ENOSYS;
    return -1;
  }
  uint64_t hash = HashPath(path);
  if (atomic_load_explicit(&verified_path_hash, memory_order_relaxed) != hash) {
    if (CheckVersion(fd) != 0) {
      CloseQuietly(fd);
      return -1;
    }
    atomic_store_explicit(&verified_path_hash, hash, memory_order_relaxed);
  }
  /* Tell the daemon which descriptor this queue is, so another kqueue of
   * this process can watch it (EVFILT_READ on a kqueue): an empty kevent. */
  if (kevent(fd, NULL, 0, NULL, 0, NULL) != 0) {
    CloseQuietly(fd);
    return -1;
  }
  return fd;
}

int kqueue(void) {
  /* NetBSD's kqueue() descriptor is not close-on-exec. */
  return OpenKqueue(0);
}

int kqueue1(int flags) {
  /* NetBSD also takes O_NOSIGPIPE, which Linux has no equivalent for. */
  if ((flags & ~(O_CLOEXEC | O_NONBLOCK)) != 0) {
    errno = EINVAL;
    return -1;
  }
  return OpenKqueue(flags);
}

int kevent(int kq, const struct kevent *changelist, size_t nchanges,
           struct kevent *eventlist, size_t nevents, const struct timespec *timeout) {
  struct kq_kevent_args args;
  memset(&args, 0, sizeof args);
  /* struct kevent and struct kq_kevent are the same bytes (asserted in
   * <sys/event.h>), so the daemon reads and writes the caller's arrays in
   * place: no copy, no limit on the count. */
  args.changelist = (uint64_t)(uintptr_t)changelist;
  args.nchanges = nchanges;
  args.eventlist = (uint64_t)(uintptr_t)eventlist;
  /* The result is an int: more than INT_MAX events cannot be reported. */
  args.nevents = nevents > INT_MAX ? (uint64_t)INT_MAX : nevents;
  /* Which descriptor this kqueue is in this process (see kqueue_abi.h). */
  args.flags = KQ_KEVENT_KQFD;
  args.kq_fd = kq;
  if (timeout != NULL) {
    args.flags |= KQ_KEVENT_TIMEOUT;
    args.timeout_sec = timeout->tv_sec;
    args.timeout_nsec = timeout->tv_nsec;
  }
  int rc = ioctl(kq, KQ_IOC_KEVENT, &args);
  /* A file that is not a kqueue answers ENOTTY; the BSDs say EBADF. */
  if (rc < 0 && errno == ENOTTY) errno = EBADF;
  /* The daemon went away: a call parked at that moment gets ECONNABORTED
   * (from the kernel after kill -9, from the daemon on a clean stop), a call
   * made afterwards ENOTCONN. One errno for both (docs/abi.md). */
  if (rc < 0 && errno == ECONNABORTED) errno = ENOTCONN;
  return rc;
}
