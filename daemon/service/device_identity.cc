#include "daemon/service/device_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>

namespace kqd {
namespace {

// The FUSE root's node id (libfuse's FUSE_ROOT_ID): the inode number the
// kernel shows for the file our FUSE transport mounts over the path.
constexpr uint64_t kFuseRootIno = 1;

constexpr unsigned kMask = STATX_TYPE | STATX_INO;

bool Stat(int dirfd, const char* path, int flags, struct statx* st) {
  return statx(dirfd, path, flags | AT_STATX_DONT_SYNC, kMask, st) == 0 &&
         (st->stx_mask & kMask) == kMask;
}

}  // namespace

bool DeviceIdentity::Matches(const struct statx& st) const {
  MutexLock l(mu_);
  if (!known_) {
    struct statx own;
    if (!Stat(AT_FDCWD, path_.c_str(), 0, &own)) return false;
    if (S_ISCHR(own.stx_mode)) {
      is_char_ = true;
      dev_ = makedev(own.stx_rdev_major, own.stx_rdev_minor);
    } else if (S_ISREG(own.stx_mode) && own.stx_ino == kFuseRootIno) {
      is_char_ = false;
      dev_ = makedev(own.stx_dev_major, own.stx_dev_minor);
    } else {
      return false;  // not served (yet, or any more): nothing is ours
    }
    known_ = true;
  }
  if (is_char_) {
    return S_ISCHR(st.stx_mode) && makedev(st.stx_rdev_major, st.stx_rdev_minor) == dev_;
  }
  return makedev(st.stx_dev_major, st.stx_dev_minor) == dev_;
}

bool DeviceIdentity::StatCopy(int fd, struct statx* st) {
  if (fd < 0) {
    errno = EBADF;
    return false;
  }
  return statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, kMask, st) == 0;
}

bool DeviceIdentity::IsDeviceStat(const struct statx& st) const {
  return (st.stx_mask & kMask) == kMask && Matches(st);
}

bool DeviceIdentity::IsDevice(int fd) const {
  struct statx st;
  return fd >= 0 && Stat(fd, "", AT_EMPTY_PATH, &st) && Matches(st);
}

bool DeviceIdentity::IsDeviceOf(pid_t pid, int fd) const {
  if (fd < 0) return false;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/fd/%d", static_cast<int>(pid), fd);
  struct statx st;
  return Stat(AT_FDCWD, path, 0, &st) && Matches(st);
}

}  // namespace kqd
