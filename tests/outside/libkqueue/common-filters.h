/*
 * Force-included into libkqueue's test/common.c only (run-libkqueue.sh).
 *
 * common.c builds a table of filter names indexed by ~EVFILT_x, which only
 * works with FreeBSD's and macOS's negative filter numbers; with NetBSD's
 * (0, 1, 2, ... as in kqueued's <sys/event.h>) the initialiser does not
 * compile. In common.c the filter constants only label diagnostic dumps
 * (filter_name, kevent_fflags_dump), so this file gives that one
 * translation unit the bitwise complements instead: the table compiles,
 * and a dump shows the filter number without its name. Every other source
 * file of the suite sees the real constants.
 */
#ifndef KQUEUED_OUTSIDE_LIBKQUEUE_COMMON_FILTERS_H_
#define KQUEUED_OUTSIDE_LIBKQUEUE_COMMON_FILTERS_H_
#include <sys/event.h>
#undef EVFILT_READ
#undef EVFILT_WRITE
#undef EVFILT_AIO
#undef EVFILT_VNODE
#undef EVFILT_PROC
#undef EVFILT_SIGNAL
#undef EVFILT_TIMER
#undef EVFILT_FS
#undef EVFILT_USER
#define EVFILT_READ (~0)
#define EVFILT_WRITE (~1)
#define EVFILT_AIO (~2)
#define EVFILT_VNODE (~3)
#define EVFILT_PROC (~4)
#define EVFILT_SIGNAL (~5)
#define EVFILT_TIMER (~6)
#define EVFILT_FS (~7)
#define EVFILT_USER (~8)
#endif
