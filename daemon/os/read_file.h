// ReadWholeFile: reads a small kernel-provided file (/proc, /sys, tracefs)
// to the end. Such files report their size as 0, so read until EOF.
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

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_READ_FILE_H_
