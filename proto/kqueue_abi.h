/*
 * kqueue_abi.h — the /dev/kqueue device ABI.
 *
 * This header is the contract between the kqueued daemon, the client library,
 * the tests and bindings in other languages. Everything here has a fixed width
 * and a fixed offset on every 64-bit Linux target; pointers travel as uint64_t.
 * docs/abi.md explains it for someone writing a binding.
 *
 * The numbers match NetBSD's <sys/event.h> so that BSD programs, and NetBSD's
 * KFILTER_BYNAME / KFILTER_BYFILTER callers, work unchanged.
 *
 * Usable from C (C11) and C++. It defines nothing that clashes with
 * <sys/event.h>: the wire structure is `struct kq_kevent`, and the client
 * library's `struct kevent` is asserted to have the same layout.
 */
#ifndef KQUEUED_PROTO_KQUEUE_ABI_H_
#define KQUEUED_PROTO_KQUEUE_ABI_H_

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>

#ifdef __cplusplus
#define KQ_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define KQ_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/*
 * Bumped on any change to this file's interface; docs/abi.md lists what
 * each version added. 2: KQ_IOC_STAT (the control interface kqstat uses).
 * 3: KQ_IOC_KEVENT_INLINE_* (kevent with its arrays inside the argument).
 * 4: KQ_IOC_LOCAL_ATTACH and the local-collection flags (knotes the owner
 * collects itself). Earlier versions' ioctls keep their numbers and layouts.
 */
#define KQ_ABI_VERSION 4u

/* Where clients look for the device unless $KQUEUE_DEVICE names another. */
#define KQ_DEFAULT_DEVICE "/dev/kqueue"
#define KQ_DEVICE_ENV "KQUEUE_DEVICE"

/* ---- The event record (NetBSD's LP64 struct kevent) ---------------------- */

struct kq_kevent {
  uint64_t ident;    /* @0  fd, pid, signal, timer id... */
  uint32_t filter;   /* @8  EVFILT_* */
  uint32_t flags;    /* @12 EV_* */
  uint32_t fflags;   /* @16 filter-specific NOTE_* */
  uint32_t reserved; /* @20 zero on output; ignored on input */
  int64_t data;      /* @24 filter-specific data */
  uint64_t udata;    /* @32 opaque user value, returned bit-exact */
};                   /* 40 bytes */

KQ_STATIC_ASSERT(sizeof(struct kq_kevent) == 40, "kq_kevent size");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent, ident) == 0, "ident");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent, filter) == 8, "filter");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent, flags) == 12, "flags");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent, fflags) == 16, "fflags");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent, reserved) == 20, "reserved");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent, data) == 24, "data");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent, udata) == 32, "udata");

/* ---- Filters ------------------------------------------------------------- */

#define EVFILT_READ 0U
#define EVFILT_WRITE 1U
#define EVFILT_AIO 2U    /* in the table, not implemented: EV_ADD is EINVAL */
#define EVFILT_VNODE 3U
#define EVFILT_PROC 4U
#define EVFILT_SIGNAL 5U
#define EVFILT_TIMER 6U
#define EVFILT_FS 7U
#define EVFILT_USER 8U
#define EVFILT_EMPTY 9U
#define EVFILT_SYSCOUNT 10U /* filters registered at run time start here */

/* ---- Actions and flags (kq_kevent.flags) ---------------------------------- */

#define EV_ADD 0x0001U      /* add the event, or update an existing one */
#define EV_DELETE 0x0002U   /* remove it */
#define EV_ENABLE 0x0004U   /* allow it to be returned */
#define EV_DISABLE 0x0008U  /* stop returning it (it stays registered) */
#define EV_ONESHOT 0x0010U  /* delete after the first retrieval */
#define EV_CLEAR 0x0020U    /* reset data and fflags after retrieval */
#define EV_RECEIPT 0x0040U  /* answer the change, collect no events */
#define EV_DISPATCH 0x0080U /* disable after retrieval */
#define EV_SYSFLAGS 0xF000U /* reserved for the system; masked off on input */
#define EV_FLAG1 0x2000U    /* internal (NOTE_TRACK's child knotes) */
#define EV_EOF 0x8000U      /* EOF or peer gone; output only */
#define EV_ERROR 0x4000U    /* error, data = errno; output only */

/* ---- EVFILT_READ / EVFILT_WRITE ------------------------------------------ */
#define NOTE_LOWAT 0x0001U /* data holds the low-water mark */

/* ---- EVFILT_VNODE --------------------------------------------------------- */
#define NOTE_DELETE 0x0001U
#define NOTE_WRITE 0x0002U
#define NOTE_EXTEND 0x0004U
#define NOTE_ATTRIB 0x0008U
#define NOTE_LINK 0x0010U
#define NOTE_RENAME 0x0020U
#define NOTE_REVOKE 0x0040U
#define NOTE_OPEN 0x0080U
#define NOTE_CLOSE 0x0100U
#define NOTE_CLOSE_WRITE 0x0200U
#define NOTE_READ 0x0400U

/* ---- EVFILT_PROC ---------------------------------------------------------- */
#define NOTE_EXIT 0x80000000U
#define NOTE_FORK 0x40000000U
#define NOTE_EXEC 0x20000000U
#define NOTE_PCTRLMASK 0xf0000000U
#define NOTE_PDATAMASK 0x000fffffU
#define NOTE_TRACK 0x00000001U
#define NOTE_TRACKERR 0x00000002U
#define NOTE_CHILD 0x00000004U

/* ---- EVFILT_USER ---------------------------------------------------------- */
#define NOTE_FFNOP 0x00000000U
#define NOTE_FFAND 0x40000000U
#define NOTE_FFOR 0x80000000U
#define NOTE_FFCOPY 0xc0000000U
#define NOTE_FFCTRLMASK 0xc0000000U
#define NOTE_FFLAGSMASK 0x00ffffffU
#define NOTE_TRIGGER 0x01000000U

/* ---- EVFILT_TIMER units (fflags) ----------------------------------------- */
#define NOTE_MSECONDS 0x00000000U
#define NOTE_SECONDS 0x00000001U
#define NOTE_USECONDS 0x00000002U
#define NOTE_NSECONDS 0x00000003U
#define NOTE_TIMER_UNITMASK 0x00000003U
#define NOTE_ABSTIME 0x00000010U

/* ---- EVFILT_FS (fflags reported) ------------------------------------------ */
/* NetBSD 10's values (FreeBSD and macOS use 0x8 and 0x10 for the same names). */
#define VQ_MOUNT 0x0001U   /* a file system was mounted (or remounted) */
#define VQ_UNMOUNT 0x0002U /* a file system was unmounted */

/* ---- Filter names (NetBSD's KFILTER ioctls) ------------------------------ */

#define KFILTER_MAXNAME 256

/*
 * NetBSD's own structure, so NetBSD code calling ioctl(kq, KFILTER_BYNAME, &m)
 * compiles and works unchanged. `name` is a pointer in the caller's memory.
 *   KFILTER_BYFILTER: in: filter, name (a buffer), len (its size);
 *                     out: the NUL-terminated name in *name.
 *                     ENOENT unknown filter, ENAMETOOLONG if len is too small.
 *   KFILTER_BYNAME:   in: name (NUL-terminated, < KFILTER_MAXNAME), len ignored;
 *                     out: filter. ENOENT unknown name.
 */
struct kfilter_mapping {
  char *name;      /* @0 */
  size_t len;      /* @8 */
  uint32_t filter; /* @16, then 4 bytes of padding */
};

KQ_STATIC_ASSERT(sizeof(struct kfilter_mapping) == 24, "kfilter_mapping");
KQ_STATIC_ASSERT(offsetof(struct kfilter_mapping, name) == 0, "name");
KQ_STATIC_ASSERT(offsetof(struct kfilter_mapping, len) == 8, "len");
KQ_STATIC_ASSERT(offsetof(struct kfilter_mapping, filter) == 16, "filter");

#define KFILTER_BYFILTER _IOWR('k', 0, struct kfilter_mapping) /* 0xC0186B00 */
#define KFILTER_BYNAME _IOWR('k', 1, struct kfilter_mapping)   /* 0xC0186B01 */

/* ---- kevent(2) as an ioctl ------------------------------------------------ */

/* kq_kevent_args.flags */
#define KQ_KEVENT_TIMEOUT 0x1U /* timeout_sec/nsec are valid; else wait forever */
#define KQ_KEVENT_KQFD 0x2U    /* kq_fd is the caller's descriptor of this kqueue */

/*
 * Exactly kevent(2)'s arguments. The daemon reads `nchanges` records from
 * `changelist` and writes at most `nevents` records to `eventlist`, both in
 * the caller's memory. The ioctl returns the number of records written, as
 * kevent(2) does, or -1 with errno (EFAULT for a bad pointer, EINVAL for an
 * invalid timeout, an unknown flag, or a nonzero kq_fd without
 * KQ_KEVENT_KQFD, EINTR when a signal arrives while waiting, and the errno of
 * a failed change when there is no room to report it in the eventlist).
 *
 * kq_fd: the descriptor the caller used for this ioctl, with
 * KQ_KEVENT_KQFD. The daemon cannot otherwise tell which of its kqueues a
 * client's descriptor is; knowing it lets another kqueue of the same process
 * watch this one with EVFILT_READ (nesting). The client libraries always
 * send it; a call with nchanges = nevents = 0 just records it.
 */
struct kq_kevent_args {
  uint64_t changelist;  /* @0  const struct kq_kevent * */
  uint64_t nchanges;    /* @8 */
  uint64_t eventlist;   /* @16 struct kq_kevent * */
  uint64_t nevents;     /* @24 */
  int64_t timeout_sec;  /* @32 */
  int64_t timeout_nsec; /* @40 */
  uint32_t flags;       /* @48 KQ_KEVENT_* */
  int32_t kq_fd;        /* @52 with KQ_KEVENT_KQFD, else zero */
};                      /* 56 bytes */

KQ_STATIC_ASSERT(sizeof(struct kq_kevent_args) == 56, "kq_kevent_args size");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_args, changelist) == 0, "cl");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_args, nchanges) == 8, "nch");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_args, eventlist) == 16, "el");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_args, nevents) == 24, "nev");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_args, timeout_sec) == 32, "sec");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_args, timeout_nsec) == 40, "nsec");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_args, flags) == 48, "flags");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_args, kq_fd) == 52, "kq_fd");

/*
 * 'k' with numbers from 0x40 up: no Linux VFS ioctl (FIOCLEX, FIONBIO,
 * FIONREAD, FIOQSIZE, FS_IOC_*, FICLONE...) uses type 'k', so FUSE and CUSE
 * pass these through to the daemon.
 */
#define KQ_IOC_KEVENT _IOWR('k', 0x40, struct kq_kevent_args) /* 0xC0386B40 */

/* ---- kevent(2) with its arrays inside the argument (ABI 3) -------------- */

/*
 * The same call as KQ_IOC_KEVENT, but the changes and the events travel in
 * the ioctl's argument itself: a kq_kevent_inline header, then room for
 * `capacity` kq_kevent records. The kernel copies the argument in and the
 * answer out in the caller's own context, so the daemon never touches the
 * caller's memory (no process_vm_*, no wait on a caller's page).
 *
 * In:  ev[0, nchanges) are the changes; ev[nchanges, capacity) is ignored.
 * Out: on success the ioctl returns the count n, and ev[0, n) holds the
 *      events (or the EV_ERROR/EV_RECEIPT answers), written over the
 *      changes: the daemon has taken every change before it writes any
 *      event (kevent(2) with one array for both is the usual idiom). The
 *      header comes back unchanged and ev[n, capacity) is not written (the
 *      answer is header + n records long; the kernel copies only that). On
 *      failure nothing is written.
 * Errors: those of KQ_IOC_KEVENT (EINVAL for bad flags, kq_fd or timeout,
 *      EINTR, EBADF, ECONNABORTED, a change's errno...), plus EINVAL when
 *      nchanges or nevents exceeds the command's capacity. Never EFAULT from
 *      the daemon (the kernel answers EFAULT itself for an argument it
 *      cannot copy).
 */
struct kq_kevent_inline {
  uint32_t nchanges;    /* @0  changes at ev[0, nchanges), <= capacity */
  uint32_t nevents;     /* @4  room for events, <= capacity */
  uint32_t flags;       /* @8  KQ_KEVENT_TIMEOUT | KQ_KEVENT_KQFD */
  int32_t kq_fd;        /* @12 with KQ_KEVENT_KQFD, else zero */
  int64_t timeout_sec;  /* @16 used with KQ_KEVENT_TIMEOUT */
  int64_t timeout_nsec; /* @24 */
  /* then struct kq_kevent ev[capacity] at @32 */
};                      /* 32 bytes */

KQ_STATIC_ASSERT(sizeof(struct kq_kevent_inline) == 32, "kq_kevent_inline size");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_inline, nchanges) == 0, "i.nchanges");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_inline, nevents) == 4, "i.nevents");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_inline, flags) == 8, "i.flags");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_inline, kq_fd) == 12, "i.kq_fd");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_inline, timeout_sec) == 16, "i.sec");
KQ_STATIC_ASSERT(offsetof(struct kq_kevent_inline, timeout_nsec) == 24, "i.nsec");

/* Bytes of the argument of an inline command of capacity `cap`. */
#define KQ_KEVENT_INLINE_SIZE(cap) (32U + (cap) * 40U)

/*
 * One command per capacity (1, 8, 64, 408 records); 408 is the largest
 * that fits the 14-bit size field and FUSE's limit on a restricted ioctl
 * (32 + 408 * 40 = 16352 <= 16383). _IOC rather than _IOWR: the size is
 * not that of one C type.
 */
#define KQ_KEVENT_INLINE_CAP_1 1U
#define KQ_KEVENT_INLINE_CAP_8 8U
#define KQ_KEVENT_INLINE_CAP_64 64U
#define KQ_KEVENT_INLINE_CAP_408 408U
#define KQ_KEVENT_INLINE_MAX KQ_KEVENT_INLINE_CAP_408

#define KQ_IOC_KEVENT_INLINE_1 \
  _IOC(_IOC_READ | _IOC_WRITE, 'k', 0x50, KQ_KEVENT_INLINE_SIZE(1U)) /* 0xC0486B50 */
#define KQ_IOC_KEVENT_INLINE_8 \
  _IOC(_IOC_READ | _IOC_WRITE, 'k', 0x51, KQ_KEVENT_INLINE_SIZE(8U)) /* 0xC1606B51 */
#define KQ_IOC_KEVENT_INLINE_64 \
  _IOC(_IOC_READ | _IOC_WRITE, 'k', 0x52, KQ_KEVENT_INLINE_SIZE(64U)) /* 0xCA206B52 */
#define KQ_IOC_KEVENT_INLINE_408 \
  _IOC(_IOC_READ | _IOC_WRITE, 'k', 0x53, KQ_KEVENT_INLINE_SIZE(408U)) /* 0xFFE06B53 */

KQ_STATIC_ASSERT(KQ_KEVENT_INLINE_SIZE(KQ_KEVENT_INLINE_MAX) <= 16383, "fits FUSE");

/* ---- Knotes the owner collects itself (ABI 4) ----------------------------- */

/*
 * The fast path of the client libraries (docs/abi.md, "KQ_IOC_LOCAL_ATTACH
 * and local collection").
 * A process that made a kqueue may collect some of its level-triggered fd
 * knotes itself, from an epoll instance of its own, without a round trip
 * to the daemon; the daemon stays the owner of the queue and of every
 * knote, and tells that process through the epoll instance when it must
 * ask the daemon after all.
 *
 * KQ_IOC_LOCAL_ATTACH (arg: struct kq_local_attach): the caller names an
 * epoll instance of its own (`epoll_fd`). The daemon takes a copy of it
 * (pidfd_getfd), adds to it one item of its own — an eventfd only the
 * daemon holds, level-triggered EPOLLIN, with `epoll_data.u64 = tag` — and
 * closes the copy. From then on the caller's process is the queue's LOCAL
 * OWNER, and the daemon keeps that eventfd readable while the queue holds
 * at least one knote that is not LOCAL (below). It sets it before the
 * ioctl that made such a knote returns, so a zero-timeout epoll_wait on the
 * owner's instance made after any kevent call returned tells the truth.
 * It is also readable from a close() of any descriptor of the queue by the
 * owner's process (set before close() returns) until that process's next
 * kevent call reaches the daemon, and after the queue's release, when the
 * daemon keeps the eventfd readable until the owner process exits (at
 * most 16 per process, the oldest closed first; docs/abi.md "Closes").
 * Errors: EINVAL nonzero `flags`/`reserved` or `epoll_fd` not an epoll
 * instance, EBADF `epoll_fd` not open in the caller, EBUSY the queue already
 * has a local owner (another process, e.g. after fork, or this one),
 * ENOTTY a daemon older than ABI 4. The eventfd counts as one of the
 * caller uid's KQ_RES_DAEMON_FDS (EMFILE past the limit); ENFILE the daemon
 * is out of descriptors, ENOSPC the kernel's epoll_ctl refused the item
 * (the caller's user at max_user_watches).
 *
 * A knote is LOCAL when the owner's library collects it itself. It becomes
 * local only through a change in a kevent call (either ioctl) made by the
 * local owner with KQ_KEVENT_LOCAL_CHANGES in the call's flags, whose record
 * has KQ_CHANGE_LOCAL in `reserved`, and only if after that change the knote
 * exists, is enabled, has filter EVFILT_READ or EVFILT_WRITE, none of
 * EV_CLEAR / EV_ONESHOT / EV_DISPATCH and no NOTE_LOWAT. Any other change to
 * the knote (from anyone) makes it not local. (The daemon does not check the
 * file's kind: the library marks only knotes it can evaluate exactly as the
 * daemon would.) Without KQ_KEVENT_LOCAL_CHANGES `reserved` is ignored on
 * input, as before ABI 4.
 *
 * KQ_KEVENT_SKIP_LOCAL in a kevent call's flags, from the local owner: the
 * call neither returns nor waits for local knotes (the caller collects them
 * from its epoll instance). From anyone else it is ignored. Every call
 * without it treats local knotes like any other (level re-check included),
 * so other processes sharing the queue, and calls that cannot use the fast
 * path, see every knote. poll() on the kqueue descriptor and a parent
 * kqueue's EVFILT_READ on it look at local knotes' files as they are when
 * answered, so a drain through the owner's epoll leaves neither ready.
 */
#define KQ_KEVENT_LOCAL_CHANGES 0x4U /* honour KQ_CHANGE_LOCAL marks (ABI 4) */
#define KQ_KEVENT_SKIP_LOCAL 0x8U    /* leave local knotes to the caller (ABI 4) */
#define KQ_CHANGE_LOCAL 0x1U         /* in a change's `reserved` (ABI 4) */

struct kq_local_attach {
  int32_t epoll_fd;  /* @0 the caller's epoll instance */
  uint32_t flags;    /* @4 zero */
  uint64_t tag;      /* @8 epoll_data.u64 of the daemon's item */
  uint64_t reserved; /* @16 zero */
};                   /* 24 bytes */

KQ_STATIC_ASSERT(sizeof(struct kq_local_attach) == 24, "kq_local_attach size");
KQ_STATIC_ASSERT(offsetof(struct kq_local_attach, flags) == 4, "la.flags");
KQ_STATIC_ASSERT(offsetof(struct kq_local_attach, tag) == 8, "la.tag");

#define KQ_IOC_LOCAL_ATTACH _IOW('k', 0x54, struct kq_local_attach) /* 0x40186B54 */

/* ---- Version handshake ---------------------------------------------------- */

struct kq_version {
  uint32_t abi_version;     /* @0 KQ_ABI_VERSION of the daemon */
  uint32_t reserved;        /* @4 zero */
  char daemon_version[56];  /* @8 NUL-terminated, e.g. "kqueued 0.1.0" */
};                          /* 64 bytes */

KQ_STATIC_ASSERT(sizeof(struct kq_version) == 64, "kq_version size");
KQ_STATIC_ASSERT(offsetof(struct kq_version, abi_version) == 0, "abi");
KQ_STATIC_ASSERT(offsetof(struct kq_version, daemon_version) == 8, "dv");

#define KQ_IOC_VERSION _IOR('k', 0x41, struct kq_version) /* 0x80406B41 */

/* ---- Control interface: what the daemon holds (ABI 2) -------------------- */

/*
 * KQ_IOC_STAT reports the daemon's state for kqstat(1) and monitoring: its
 * own descriptors and memory, per-user usage against the limits, and every
 * kqueue with its opener, knotes by filter, pending events and parked
 * calls. It may be issued on any open kqueue descriptor; that kqueue itself
 * is left out of the report. Visibility: a caller with effective uid 0 sees
 * everything; any other caller sees only the kqueues and the usage of its
 * own effective uid (the daemon-wide totals are shown to everyone).
 *
 * The report is written to `buf` in the caller's memory: one kq_stat_header,
 * then `nqueues` kq_stat_queue records, then `nusers` kq_stat_user records,
 * each record `*_size` bytes long (a newer daemon may append fields: step by
 * the sizes in the header, never by sizeof). The ioctl returns the number of
 * bytes written, and `needed` is set to the size of the whole report; if
 * `buf_size` is smaller than that, nothing is written and the ioctl returns
 * 0: retry with a larger buffer. Errors: EINVAL nonzero `flags` or a
 * negative `pid`, EFAULT unwritable buffer.
 */
#define KQ_STAT_VERSION 2u /* 2: KQ_RES_FAST_TIMERS .. KQ_RES_WATCHED_FDS */
#define KQ_STAT_FILTER_SLOTS 16 /* knotes of filters 0..14; slot 15: all others */
#define KQ_STAT_RESOURCES 8     /* per-user resource slots (KQ_RES_*) */

/* Per-user resources, the index into kq_stat_user.used / .limit. */
#define KQ_RES_KQUEUES 0 /* open kqueues */
#define KQ_RES_KNOTES 1  /* registered knotes */
#define KQ_RES_TIMERS 2  /* EVFILT_TIMER knotes */
#define KQ_RES_FAST_TIMERS 3  /* timers with a period below 10 ms */
#define KQ_RES_DAEMON_FDS 4   /* descriptors the daemon keeps open for the user */
#define KQ_RES_KQUEUE_NAMES 5 /* descriptors remembered as naming a kqueue (KQ_KEVENT_KQFD) */
#define KQ_RES_WATCHED_FDS 6  /* EVFILT_READ/WRITE/EMPTY knotes */
#define KQ_RES_COUNT 7   /* slots from here to KQ_STAT_RESOURCES are zero */

struct kq_stat_args {
  uint64_t buf;      /* @0  in: address of the report buffer */
  uint64_t buf_size; /* @8  in: its size in bytes */
  uint64_t needed;   /* @16 out: size of the whole report */
  int32_t pid;       /* @24 in: 0 all; > 0 only kqueues opened by that process */
  uint32_t flags;    /* @28 in: zero */
};                   /* 32 bytes */

KQ_STATIC_ASSERT(sizeof(struct kq_stat_args) == 32, "kq_stat_args size");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_args, buf) == 0, "buf");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_args, buf_size) == 8, "buf_size");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_args, needed) == 16, "needed");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_args, pid) == 24, "pid");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_args, flags) == 28, "flags");

struct kq_stat_header {
  uint32_t stat_version; /* @0  KQ_STAT_VERSION */
  uint32_t header_size;  /* @4  sizeof(struct kq_stat_header) */
  uint32_t queue_size;   /* @8  size of one kq_stat_queue record */
  uint32_t user_size;    /* @12 size of one kq_stat_user record */
  uint32_t nqueues;      /* @16 kq_stat_queue records that follow */
  uint32_t nusers;       /* @20 kq_stat_user records after them */
  int32_t daemon_pid;    /* @24 */
  uint32_t daemon_fds;   /* @28 descriptors the daemon has open */
  uint64_t daemon_rss;   /* @32 resident memory, bytes */
  uint64_t daemon_vsize; /* @40 virtual memory, bytes */
  uint64_t uptime_sec;   /* @48 since the daemon started serving */
  /* Daemon-wide totals, whoever asks. */
  uint64_t total_kqueues; /* @56 */
  uint64_t total_knotes;  /* @64 */
  uint64_t total_pending; /* @72 knotes on active queues */
  uint64_t total_waiters; /* @80 parked kevent calls */
  uint64_t log_suppressed; /* @88 log lines dropped by the per-client rate limit */
};                        /* 96 bytes */

KQ_STATIC_ASSERT(sizeof(struct kq_stat_header) == 96, "kq_stat_header size");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_header, daemon_pid) == 24, "daemon_pid");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_header, daemon_rss) == 32, "daemon_rss");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_header, total_kqueues) == 56, "total_kqueues");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_header, log_suppressed) == 88, "log_suppressed");

struct kq_stat_queue {
  uint64_t id;      /* @0  the daemon's number for this kqueue (per open) */
  int32_t pid;      /* @8  process that opened it (0: not visible) */
  uint32_t uid;     /* @12 effective uid that opened it (charged for it) */
  uint32_t knotes;  /* @16 registered knotes */
  uint32_t pending; /* @20 knotes on the active queue */
  uint32_t waiters; /* @24 kevent calls parked on it */
  uint32_t reserved; /* @28 zero */
  uint32_t by_filter[KQ_STAT_FILTER_SLOTS]; /* @32 knotes per filter number */
};                  /* 96 bytes */

KQ_STATIC_ASSERT(sizeof(struct kq_stat_queue) == 96, "kq_stat_queue size");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_queue, pid) == 8, "q.pid");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_queue, waiters) == 24, "q.waiters");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_queue, by_filter) == 32, "q.by_filter");

struct kq_stat_user {
  uint32_t uid;      /* @0 */
  uint32_t reserved; /* @4 zero */
  uint64_t used[KQ_STAT_RESOURCES];  /* @8  in use, by KQ_RES_* */
  uint64_t limit[KQ_STAT_RESOURCES]; /* @72 the ceiling, by KQ_RES_* */
};                   /* 136 bytes */

KQ_STATIC_ASSERT(sizeof(struct kq_stat_user) == 136, "kq_stat_user size");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_user, used) == 8, "u.used");
KQ_STATIC_ASSERT(offsetof(struct kq_stat_user, limit) == 72, "u.limit");

#define KQ_IOC_STAT _IOWR('k', 0x42, struct kq_stat_args) /* 0xC0206B42 */

#endif /* KQUEUED_PROTO_KQUEUE_ABI_H_ */
