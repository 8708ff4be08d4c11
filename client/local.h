/*
 * local.h — the C library's fast path (ABI 4 "local collection"), internal.
 *
 * For a kqueue made by kqueue() in this process the library owns an epoll
 * instance, attaches it to the queue (KQ_IOC_LOCAL_ATTACH) and registers
 * there itself the level-triggered EVFILT_READ / EVFILT_WRITE knotes of
 * pipes and FIFOs it adds; a kevent() whose answer needs nothing else is
 * then answered from that epoll instance without a daemon round trip. The
 * daemon stays the owner of every knote: every change still goes to it.
 * client/README.md ("The fast path") describes the rules.
 *
 * Nothing here is exported from libkqueue.so (hidden visibility).
 */
#ifndef KQUEUED_CLIENT_LOCAL_H_
#define KQUEUED_CLIENT_LOCAL_H_

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <sys/event.h>

#define KQD_HIDDEN __attribute__((visibility("hidden")))

/* Returned by kqd_local_kevent when the queue has no fast path: the caller
 * takes the ordinary path (errno untouched). */
#define KQD_NOT_LOCAL (-2)

/*
 * kevent() through the daemon, with `extra_flags` (KQ_KEVENT_LOCAL_CHANGES,
 * KQ_KEVENT_SKIP_LOCAL) added to the call's flags: the inline ioctls when
 * they fit, else KQ_IOC_KEVENT. Returns the ioctl's result; errno as the
 * ioctl left it (kevent() maps ENOTTY and ECONNABORTED). Defined in
 * kqueue.c.
 */
KQD_HIDDEN int kqd_daemon_kevent(int kq, const struct kevent *changelist, size_t nchanges,
                                 struct kevent *eventlist, size_t nevents,
                                 const struct timespec *timeout, uint32_t extra_flags);

/*
 * Drops whatever fast-path state the library holds for descriptor number
 * `kq` (kqueue() calls it for the number it was just given: that number
 * names a new queue now). errno is preserved.
 */
KQD_HIDDEN void kqd_local_forget(int kq);

/*
 * Sets up the fast path for the new queue `kq` unless $KQUEUE_LOCAL is "0":
 * a new epoll instance attached to the queue. Any failure (an older daemon,
 * EBUSY, no memory...) leaves the queue on the ordinary path; never fails
 * itself, errno is preserved.
 */
KQD_HIDDEN void kqd_local_open(int kq);

/*
 * kevent() on a queue with a fast path: same arguments, result and errno
 * as the ordinary path. KQD_NOT_LOCAL if `kq` has none (not made by
 * kqueue() in this process, $KQUEUE_LOCAL=0, the attach failed, or the
 * queue went to the ordinary path for good).
 */
KQD_HIDDEN int kqd_local_kevent(int kq, const struct kevent *changelist, size_t nchanges,
                                struct kevent *eventlist, size_t nevents,
                                const struct timespec *timeout);

#endif /* KQUEUED_CLIENT_LOCAL_H_ */
