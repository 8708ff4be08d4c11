#include "daemon/transport/caller_memory.h"

#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <limits>

namespace kqd {

namespace {

enum class Direction { kRead, kWrite };

size_t PageSize() {
  // Initialised once (thread-safe static); never changes afterwards.
  static const size_t page_size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page_size;
}

bool RangeWraps(uint64_t addr, size_t size) {
  return size > 0 && addr > std::numeric_limits<uint64_t>::max() - (size - 1);
}

// One loop for both directions: process_vm_* may transfer less than asked
// (it stops at the first page it cannot access, or splits very large
// requests), so keep going from where it stopped until done or no progress.
int Transfer(Direction dir, pid_t tid, uint64_t addr, char* local,
             size_t size) {
  if (size == 0) return 0;
  if (tid <= 0) return ESRCH;
  if (RangeWraps(addr, size)) return EFAULT;
  size_t done = 0;
  while (done < size) {
    struct iovec local_iov = {local + done, size - done};
    struct iovec remote_iov = {
        reinterpret_cast<void*>(static_cast<uintptr_t>(addr + done)),
        size - done};
    ssize_t n = dir == Direction::kRead
                    ? process_vm_readv(tid, &local_iov, 1, &remote_iov, 1, 0)
                    : process_vm_writev(tid, &local_iov, 1, &remote_iov, 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    // Zero bytes for a non-empty request means the next byte is not
    // accessible: report it like the failing call would have.
    if (n == 0) return EFAULT;
    done += static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace

int ReadCallerMemory(pid_t tid, uint64_t addr, void* buf, size_t size) {
  return Transfer(Direction::kRead, tid, addr, static_cast<char*>(buf), size);
}

int WriteCallerMemory(pid_t tid, uint64_t addr, const void* buf, size_t size) {
  // process_vm_writev takes a non-const local iovec but only reads from it.
  return Transfer(Direction::kWrite, tid, addr,
                  const_cast<char*>(static_cast<const char*>(buf)), size);
}

int ReadCallerString(pid_t tid, uint64_t addr, size_t max_len,
                     std::string* out) {
  out->clear();
  if (max_len == 0) return ENAMETOOLONG;
  if (tid <= 0) return ESRCH;
  const size_t page = PageSize();
  std::string buf;
  uint64_t cursor = addr;
  size_t remaining = max_len;
  while (remaining > 0) {
    if (cursor == 0 && cursor != addr) return EFAULT;  // wrapped past the top
    // Read only up to the end of the current page. A fixed max_len chunk
    // could reach into the next page, and if that page is unmapped the read
    // fails with EFAULT although the NUL came before it; page by page we
    // only ever touch pages that hold part of the string.
    size_t chunk = page - static_cast<size_t>(cursor % page);
    if (chunk > remaining) chunk = remaining;
    size_t old_size = buf.size();
    buf.resize(old_size + chunk);
    int err = ReadCallerMemory(tid, cursor, &buf[old_size], chunk);
    if (err != 0) return err;
    const void* nul = std::memchr(&buf[old_size], '\0', chunk);
    if (nul != nullptr) {
      buf.resize(static_cast<size_t>(static_cast<const char*>(nul) -
                                     buf.data()));
      *out = std::move(buf);
      return 0;
    }
    cursor += chunk;
    remaining -= chunk;
  }
  return ENAMETOOLONG;
}

}  // namespace kqd
