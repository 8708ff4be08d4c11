// ReadWholeFile: reads a small kernel-provided file (/proc, /sys, tracefs)
// to the end. Such files report their size as 0, so read until EOF.
// WriteSmallFile: writes a setting to such a file in one write().
#ifndef KQUEUED_DAEMON_OS_READ_FILE_H_
#define KQUEUED_DAEMON_OS_READ_FILE_H_

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "daemon/util/scoped_fd.h"

namespace kqd {

// Returns 0 and the contents in *out, or an errno.
inline int ReadWholeFile(const std::string& path, std::string* out) {
  ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno;
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return 0;
    out->append(buf, static_cast<size_t>(n));
  }
}

// Writes `text` to an existing file with a single write() (a tracefs or
// /proc setting takes the whole value at once). Returns 0 or an errno.
inline int WriteSmallFile(const std::string& path, const std::string& text) {
  ScopedFd fd(open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd) return errno;
  for (;;) {
    ssize_t n = write(fd.get(), text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    return static_cast<size_t>(n) == text.size() ? 0 : EIO;
  }
}

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_READ_FILE_H_
