// The daemon's heap, as the C library keeps it.
#ifndef KQUEUED_DAEMON_OS_MEMORY_H_
#define KQUEUED_DAEMON_OS_MEMORY_H_

namespace kqd {

// Gives the pages of freed heap memory back to the kernel (glibc's
// malloc_trim, every arena). Without it, memory freed after a burst —
// a thousand clients gone at once — stays resident in the daemon. Costs a
// walk of the free lists: call it after a burst, not per request.
void ReturnFreedMemory();

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_MEMORY_H_
