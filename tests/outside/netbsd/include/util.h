/* NetBSD's <util.h> declares openpty(3); glibc has it in <pty.h>.
 * (kqueued's tests/outside shim for the NetBSD kqueue tests.) */
#ifndef KQUEUED_OUTSIDE_UTIL_H_
#define KQUEUED_OUTSIDE_UTIL_H_
#include <pty.h>
#endif
