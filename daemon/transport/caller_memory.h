// Reading and writing the memory of the thread that made a request.
//
// A kevent ioctl carries pointers (changelist, eventlist, filter names) into
// the caller's address space. The caller's thread is blocked in the ioctl
// while the daemon serves it, so its memory is stable; the daemon (root, in
// the initial pid namespace) copies with process_vm_readv/writev, addressing
// the process by the caller's thread id (a tid is accepted wherever these
// calls take a pid).
//
// All functions return 0 or a positive errno:
//   EFAULT  some byte of the range is not mapped with the needed access
//           (also for a range that wraps around the address space);
//   ESRCH   the thread is gone, or tid is 0 (caller not visible to us);
//   EPERM   no ptrace permission over the caller (Yama, LSMs).
#ifndef KQUEUED_DAEMON_TRANSPORT_CALLER_MEMORY_H_
#define KQUEUED_DAEMON_TRANSPORT_CALLER_MEMORY_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace kqd {

// Copies `size` bytes at `addr` in the caller into `buf`. Transfers that the
// kernel cuts short continue where they stopped; a range that is only partly
// readable fails with EFAULT (and `buf` then holds an unspecified prefix).
int ReadCallerMemory(pid_t tid, uint64_t addr, void* buf, size_t size);

// Copies `size` bytes from `buf` to `addr` in the caller. On EFAULT a prefix
// of the range may already have been written, as with copy_to_user.
int WriteCallerMemory(pid_t tid, uint64_t addr, const void* buf, size_t size);

// Reads a NUL-terminated string at `addr`. `max_len` counts the terminating
// NUL: the NUL must be among the first `max_len` bytes (so the string has at
// most max_len - 1 characters; KFILTER_MAXNAME fits this convention).
// Memory is read one page at a time and never past the page holding the NUL,
// so a string that ends right before an unmapped page is read fine.
// On success *out holds the string without its NUL. Errors: ENAMETOOLONG
// when no NUL is within max_len bytes (also for max_len 0), EFAULT when a
// byte before the NUL is unreadable, and the errors above.
int ReadCallerString(pid_t tid, uint64_t addr, size_t max_len,
                     std::string* out);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_CALLER_MEMORY_H_
