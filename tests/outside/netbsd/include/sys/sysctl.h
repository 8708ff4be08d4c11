/* NetBSD's <sys/sysctl.h>: glibc dropped the header (2.32) and Linux has no
 * sysctl(2) name space of NetBSD's MIB. The kqueue tests use it only through
 * isqemu.h, which asks for "machdep.cpu_brand" and treats ENOENT as "not
 * under QEMU"; so sysctlbyname here knows no name at all and says ENOENT,
 * which keeps the timer tests at NetBSD's strict (non-QEMU) bounds.
 * (kqueued's tests/outside shim for the NetBSD kqueue tests.) */
#ifndef KQUEUED_OUTSIDE_SYS_SYSCTL_H_
#define KQUEUED_OUTSIDE_SYS_SYSCTL_H_
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

static inline int sysctlbyname(const char* name, void* oldp, size_t* oldlenp,
                               const void* newp, size_t newlen) {
  (void)name; (void)oldp; (void)oldlenp; (void)newp; (void)newlen;
  errno = ENOENT;
  return -1;
}
#endif
