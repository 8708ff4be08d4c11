/*
 * <sys/event.h> for Linux, served by kqueued.
 *
 * This is the header BSD programs include for kqueue(2) and kevent(2). It
 * follows NetBSD's: the same struct kevent (LP64 layout), EV_SET, the same
 * EVFILT_/EV_/NOTE_ numbers, struct kfilter_mapping with KFILTER_BYNAME and
 * KFILTER_BYFILTER for ioctl(2), and kevent() taking size_t counts.
 *
 * Every kqueue is an open file of the kqueued device. kqueue() opens
 * $KQUEUE_DEVICE, or /dev/kqueue when it is unset or empty (the variable is
 * ignored in set-user-ID and set-group-ID programs), and kevent() is one
 * ioctl on that file. The KFILTER ioctls go straight to ioctl(2).
 *
 * Differences from the BSDs that a program may notice:
 *  - A kqueue IS shared with the children of fork(2): parent and child use the
 *    same queue, and an event is delivered to one caller only. BSD kqueues are
 *    not inherited. A program that relies on "the child has no kqueue" must
 *    close it in the child.
 *  - kqueue() is not close-on-exec (as on NetBSD); kqueue1(O_CLOEXEC) is.
 *
 * errno values beyond the BSD ones:
 *  kqueue(), kqueue1():
 *    ENOSYS  No kqueue service: the device does not exist (ENOENT), is not
 *            served by a daemon any more (ENOTCONN, ENXIO, ENODEV), or is not
 *            a kqueue device at all (it rejects the version ioctl).
 *    EPROTO  The daemon speaks an ABI older than version 2, the oldest this
 *            library works with. Upgrade the daemon.
 *    EINVAL  kqueue1() flags other than O_CLOEXEC and O_NONBLOCK.
 *    EACCES, EPERM, EMFILE, ENFILE, ENOMEM: from open(2), unchanged.
 *  kevent():
 *    EBADF     kq is not a kqueue: a closed fd (as on the BSDs) or an open
 *              file that is not the kqueue device (the ioctl's ENOTTY).
 *    ENOTCONN  The daemon serving this kqueue is gone (also for a call that
 *              was waiting when it went); the queue is lost.
 *    EINTR, EINVAL, EFAULT, ENOENT, ESRCH, ENOMEM...: as on the BSDs.
 *              Calls of up to 408 records copy the arrays in the library
 *              (the daemon's inline kevent), so an unreadable or unwritable
 *              array other than a null one faults in the caller instead of
 *              failing with EFAULT ($KQUEUE_INLINE=0 restores EFAULT).
 */
#ifndef KQUEUED_CLIENT_SYS_EVENT_H_
#define KQUEUED_CLIENT_SYS_EVENT_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

/*
 * The ABI header defines every constant and struct kfilter_mapping. It is
 * installed as <kqueued/kqueue_abi.h>; inside the source tree Bazel maps
 * proto/kqueue_abi.h to the same name (//client:abi_installed_path).
 */
#include <kqueued/kqueue_abi.h>

/* NetBSD's struct kevent, field for field. The compiler puts 4 bytes of
 * padding after fflags, exactly where struct kq_kevent has `reserved`. The
 * daemon ignores those bytes on input and writes zero there on output; EV_SET
 * zeroes them too, so that an event set with EV_SET and the same event
 * returned by kevent() compare equal with memcmp (programs written for the
 * padless layouts of FreeBSD and macOS do compare so, e.g. libkqueue's
 * tests). */
struct kevent {
  uintptr_t ident; /* identifier for this event */
  uint32_t filter; /* filter for event */
  uint32_t flags;  /* action flags for kqueue */
  uint32_t fflags; /* filter flag value */
  int64_t data;    /* filter data value */
  void *udata;     /* opaque user data identifier */
};

/* kevent() hands the caller's array to the daemon as struct kq_kevent[]: the
 * two must match byte for byte. This is an LP64-only library. */
KQ_STATIC_ASSERT(sizeof(void *) == 8, "kqueued's client library is LP64-only");
KQ_STATIC_ASSERT(sizeof(struct kevent) == sizeof(struct kq_kevent), "kevent size");
KQ_STATIC_ASSERT(offsetof(struct kevent, ident) == offsetof(struct kq_kevent, ident),
                 "kevent.ident");
KQ_STATIC_ASSERT(offsetof(struct kevent, filter) == offsetof(struct kq_kevent, filter),
                 "kevent.filter");
KQ_STATIC_ASSERT(offsetof(struct kevent, flags) == offsetof(struct kq_kevent, flags),
                 "kevent.flags");
KQ_STATIC_ASSERT(offsetof(struct kevent, fflags) == offsetof(struct kq_kevent, fflags),
                 "kevent.fflags");
/* The padding: fflags ends at 20, data starts at 24, like kq_kevent.reserved. */
KQ_STATIC_ASSERT(offsetof(struct kevent, fflags) + sizeof(uint32_t) ==
                     offsetof(struct kq_kevent, reserved),
                 "kevent padding starts at 20");
KQ_STATIC_ASSERT(offsetof(struct kevent, data) == offsetof(struct kq_kevent, data),
                 "kevent.data (after 4 padding bytes)");
KQ_STATIC_ASSERT(offsetof(struct kevent, udata) == offsetof(struct kq_kevent, udata),
                 "kevent.udata");

/* NetBSD's EV_SET: kevp is evaluated once, udata may be an integer or a
 * pointer (it goes through intptr_t, as NetBSD's does). The arguments are
 * evaluated before *kevp is cleared, so EV_SET(&ev, ev.ident, ...) works;
 * the clearing covers the padding bytes, which no field assignment does. */
static __inline void kq_ev_set(struct kevent *kevp, uintptr_t ident, uint32_t filter,
                               uint32_t flags, uint32_t fflags, int64_t data,
                               void *udata) {
  memset(kevp, 0, sizeof(*kevp));
  kevp->ident = ident;
  kevp->filter = filter;
  kevp->flags = flags;
  kevp->fflags = fflags;
  kevp->data = data;
  kevp->udata = udata;
}

#define EV_SET(kevp, ident, filter, flags, fflags, data, udata)                 \
  kq_ev_set((kevp), (uintptr_t)(ident), (uint32_t)(filter), (uint32_t)(flags), \
            (uint32_t)(fflags), (int64_t)(data), (void *)(intptr_t)(udata))

/* Strict C99 <time.h> does not define it; a program that passes one has
 * its definition anyway. */
struct timespec;

#ifdef __cplusplus
extern "C" {
#endif

/* A new kqueue: a file descriptor, not close-on-exec. */
int kqueue(void);

/* kqueue() with flags: O_CLOEXEC and/or O_NONBLOCK (from <fcntl.h>).
 * O_NONBLOCK is set on the descriptor; kevent() is governed by its timeout
 * alone, as on the BSDs. */
int kqueue1(int flags);

/* Applies nchanges changes, then collects at most nevents events, waiting
 * as long as *timeout (NULL: forever; {0, 0}: not at all). Returns the number
 * of entries written to eventlist, or -1 with errno. */
int kevent(int kq, const struct kevent *changelist, size_t nchanges,
           struct kevent *eventlist, size_t nevents, const struct timespec *timeout);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KQUEUED_CLIENT_SYS_EVENT_H_ */
