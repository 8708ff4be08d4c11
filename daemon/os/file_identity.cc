#include "daemon/os/file_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

namespace kqd {

bool IsAnonymousPipe(int fd) {
  struct statfs sfs;
  return fstatfs(fd, &sfs) == 0 && sfs.f_type == PIPEFS_MAGIC;
}

int ReadIdentity(int fd, FileIdentity* out) {
  // AT_STATX_DONT_SYNC: a FUSE file (our own device among them) answers
  // from the attributes it has, never with a request to its server.
  struct statx stx;
  if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_INO, &stx) != 0)
    return errno;
  return IdentityFromStatx(fd, stx, out);
}

int IdentityFromStatx(int fd, const struct statx& stx, FileIdentity* out) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return errno;
  out->dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  out->ino = stx.stx_ino;
  out->rdev = makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
  out->type = stx.stx_mode & S_IFMT;
  out->accmode = fl & O_ACCMODE;
  return 0;
}

}  // namespace kqd
