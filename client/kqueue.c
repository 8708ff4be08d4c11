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

#include "client/local.h"

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

/* The oldest daemon ABI this library works with: version 2's ioctls are all
 * kevent() needs. Version 3 adds the inline kevent commands, used when the
 * daemon has them. */
#define KQ_CLIENT_MIN_ABI 2u
#define KQ_INLINE_ABI 3u

/* Whether the last handshake found a daemon with the inline commands:
 * 0 not known (a descriptor inherited across exec: try them, and fall back
 * on ENOTTY), 1 yes, 2 no. Set with verified_path_hash. */
static _Atomic int inline_abi = 0;

/* $KQUEUE_INLINE=0 forces the pointer ioctl (the test suites run both
 * ways). Read once: 0 unread, 1 inline allowed, 2 forced off. */
static _Atomic int inline_switch = 0;

static int InlineAllowed(void) {
  int state = atomic_load_explicit(&inline_switch, memory_order_relaxed);
  if (state == 0) {
    const char *value = secure_getenv("KQUEUE_INLINE");
    state = (value != NULL && strcmp(value, "0") == 0) ? 2 : 1;
    atomic_store_explicit(&inline_switch, state, memory_order_relaxed);
  }
  return state == 1 && atomic_load_explicit(&inline_abi, memory_order_relaxed) != 2;
}

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
  if (version.abi_version < KQ_CLIENT_MIN_ABI) {
    errno = EPROTO;
    return -1;
  }
  atomic_store_explicit(&inline_abi, version.abi_version >= KQ_INLINE_ABI ? 1 : 2,
                        memory_order_relaxed);
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
  /* Whatever the library knew of an earlier queue with this number is
   * stale now. */
  kqd_local_forget(fd);
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
  /* The fast path (local.h), unless switched off or not served. */
  kqd_local_open(fd);
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

/* kevent() through KQ_IOC_KEVENT: the daemon reads and writes the caller's
 * arrays in place. */
static int PointerKevent(int kq, const struct kevent *changelist, size_t nchanges,
                         struct kevent *eventlist, size_t nevents,
                         const struct timespec *timeout, uint32_t extra_flags) {
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
  args.flags = KQ_KEVENT_KQFD | extra_flags;
  args.kq_fd = kq;
  if (timeout != NULL) {
    args.flags |= KQ_KEVENT_TIMEOUT;
    args.timeout_sec = timeout->tv_sec;
    args.timeout_nsec = timeout->tv_nsec;
  }
  return ioctl(kq, KQ_IOC_KEVENT, &args);
}

/* Buffers of inline capacity up to this many records live on the stack
 * (2.6 KB); the 408-record one (16 KB) is allocated. */
#define KQ_INLINE_STACK_CAP KQ_KEVENT_INLINE_CAP_64

/* The inline command for n records and its capacity; 0 if none fits. */
static unsigned long InlineCommand(size_t n, size_t *capacity) {
  if (n <= KQ_KEVENT_INLINE_CAP_1) {
    *capacity = KQ_KEVENT_INLINE_CAP_1;
    return KQ_IOC_KEVENT_INLINE_1;
  }
  if (n <= KQ_KEVENT_INLINE_CAP_8) {
    *capacity = KQ_KEVENT_INLINE_CAP_8;
    return KQ_IOC_KEVENT_INLINE_8;
  }
  if (n <= KQ_KEVENT_INLINE_CAP_64) {
    *capacity = KQ_KEVENT_INLINE_CAP_64;
    return KQ_IOC_KEVENT_INLINE_64;
  }
  if (n <= KQ_KEVENT_INLINE_CAP_408) {
    *capacity = KQ_KEVENT_INLINE_CAP_408;
    return KQ_IOC_KEVENT_INLINE_408;
  }
  return 0;
}

/* The argument of an inline command: the header, then the records. */
struct InlineArg {
  struct kq_kevent_inline head;
  struct kq_kevent ev[];
};

/* kevent() through KQ_IOC_KEVENT_INLINE_*: changes copied into the
 * argument, events copied out of it; the daemon never touches the caller's
 * memory. Returns -2 (errno untouched) if no inline command can carry the
 * call or the daemon does not know them (ENOTTY): use the pointer ioctl. */
static int InlineKevent(int kq, const struct kevent *changelist, size_t nchanges,
                        struct kevent *eventlist, size_t nevents,
                        const struct timespec *timeout, uint32_t extra_flags) {
  /* A null array with a count is the pointer ioctl's EFAULT. (Any other
   * bad pointer faults here, in the caller, as a memcpy would.) */
  if ((changelist == NULL && nchanges > 0) || (eventlist == NULL && nevents > 0)) return -2;
  size_t capacity = 0;
  unsigned long cmd = InlineCommand(nchanges > nevents ? nchanges : nevents, &capacity);
  if (cmd == 0) return -2;
  /* Aligned for struct kq_kevent's 8-byte fields. */
  uint64_t stack[KQ_KEVENT_INLINE_SIZE(KQ_INLINE_STACK_CAP) / sizeof(uint64_t)];
  struct InlineArg *arg = (struct InlineArg *)stack;
  if (capacity > KQ_INLINE_STACK_CAP) {
    arg = malloc(KQ_KEVENT_INLINE_SIZE(capacity));
    if (arg == NULL) return -2;
  }
  memset(&arg->head, 0, sizeof arg->head);
  arg->head.nchanges = (uint32_t)nchanges;
  arg->head.nevents = (uint32_t)nevents;
  arg->head.flags = KQ_KEVENT_KQFD | extra_flags;
  arg->head.kq_fd = kq;
  if (timeout != NULL) {
    arg->head.flags |= KQ_KEVENT_TIMEOUT;
    arg->head.timeout_sec = timeout->tv_sec;
    arg->head.timeout_nsec = timeout->tv_nsec;
  }
  if (nchanges > 0) memcpy(arg->ev, changelist, nchanges * sizeof(struct kq_kevent));
  int rc = ioctl(kq, cmd, arg);
  if (rc > 0) {
    if ((size_t)rc <= nevents) {
      memcpy(eventlist, arg->ev, (size_t)rc * sizeof(struct kq_kevent));
    } else {
      /* More events than room: not a daemon keeping the ABI. */
      rc = -1;
      errno = EIO;
    }
  }
  if (rc < 0 && errno == ENOTTY) rc = -2;  /* an older daemon, or not a kqueue */
  if (arg != (struct InlineArg *)stack) {
    int saved = errno;
    free(arg);
    errno = saved;
  }
  return rc;
}

int kqd_daemon_kevent(int kq, const struct kevent *changelist, size_t nchanges,
                      struct kevent *eventlist, size_t nevents, const struct timespec *timeout,
                      uint32_t extra_flags) {
  int rc = -2;
  if (InlineAllowed())
    rc = InlineKevent(kq, changelist, nchanges, eventlist, nevents, timeout, extra_flags);
  if (rc == -2)
    rc = PointerKevent(kq, changelist, nchanges, eventlist, nevents, timeout, extra_flags);
  return rc;
}

int kevent(int kq, const struct kevent *changelist, size_t nchanges,
           struct kevent *eventlist, size_t nevents, const struct timespec *timeout) {
  int rc = kqd_local_kevent(kq, changelist, nchanges, eventlist, nevents, timeout);
  if (rc == KQD_NOT_LOCAL)
    rc = kqd_daemon_kevent(kq, changelist, nchanges, eventlist, nevents, timeout, 0);
  /* A file that is not a kqueue answers ENOTTY; the BSDs say EBADF. */
  if (rc < 0 && errno == ENOTTY) errno = EBADF;
  /* The daemon went away: a call parked at that moment gets ECONNABORTED
   * (from the kernel after kill -9, from the daemon on a clean stop), a call
   * made afterwards ENOTCONN. One errno for both (docs/abi.md). */
  if (rc < 0 && errno == ECONNABORTED) errno = ENOTCONN;
  return rc;
}
