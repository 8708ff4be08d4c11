// The one place that includes libfuse, so every transport file agrees on the
// API version. Version 35 gives the lowlevel ioctl callback an unsigned cmd
// (an _IOWR command has the top bit set). Internal to daemon/transport.
#ifndef KQUEUED_DAEMON_TRANSPORT_FUSE_API_H_
#define KQUEUED_DAEMON_TRANSPORT_FUSE_API_H_

#if defined(FUSE_USE_VERSION) && FUSE_USE_VERSION != 35
#error "daemon/transport expects FUSE_USE_VERSION 35"
#endif
#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 35
#endif

#include <cuse_lowlevel.h>
#include <fuse_lowlevel.h>

#endif  // KQUEUED_DAEMON_TRANSPORT_FUSE_API_H_
