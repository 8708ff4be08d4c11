#include "daemon/os/file_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

namespace kqd {

int ReadIdentity(int fd, FileIdentity* out) {
  struct stat st;
  if (fstat(fd, &st) != 0) return errno;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return errno;
  out->dev = st.st_dev;
  out->ino = st.st_ino;
  out->rdev = st.st_rdev;
  out->type = st.st_mode & S_IFMT;
  out->accmode = fl & O_ACCMODE;
  return 0;
}

}  // namespace kqd
