#include "daemon/transport/mount_point.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <fstream>

#include "daemon/os/mountinfo.h"

namespace kqd {

namespace {

// Stacked dead mounts are possible (a daemon that crashed several times);
// past this many something else keeps mounting there.
constexpr int kMaxStaleMounts = 16;

std::string ErrnoText(int err) { return strerror(err); }

std::string Dirname(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Resolves the directory part (symlinks, "..", relative paths) but not the
// last component: a dead mount there would make realpath fail.
bool Canonicalize(const std::string& path, std::string* out,
                  std::string* error) {
  if (path.empty() || path.back() == '/') {
    *error = "device path \"" + path + "\" does not name a file";
    return false;
  }
  size_t slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base == "." || base == "..") {
    *error = "device path \"" + path + "\" does not name a file";
    return false;
  }
  std::string dir = Dirname(path);
  char* real = realpath(dir.c_str(), nullptr);
  if (real == nullptr) {
    *error = "directory of " + path + ": " + ErrnoText(errno);
    return false;
  }
  std::string resolved(real);
  free(real);
  *out = resolved == "/" ? "/" + base : resolved + "/" + base;
  return true;
}

// A FUSE mount whose daemon died answers ENOTCONN (ECONNABORTED if it was
// aborted through /sys/fs/fuse/connections); detach it so we can mount.
//
// Asked with statfs(2), not lstat(2): the kernel answers lstat from the
// attribute cache (the daemon grants an hour, see fuse_transport.cc) without
// asking the server, so a dead mount looked alive for up to an hour. statfs
// on a FUSE mount is always a request on the connection, and a connection
// whose server is gone fails it at once with ENOTCONN. A live daemon answers
// it (libfuse does by default), and a path that is no mount at all is
// answered by the filesystem below.
bool DetachDeadMounts(const std::string& path, std::string* error) {
  for (int i = 0; i < kMaxStaleMounts; ++i) {
    struct statfs sfs;
    if (statfs(path.c_str(), &sfs) == 0) return true;
    if (errno != ENOTCONN && errno != ECONNABORTED) return true;
    if (umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
      *error = path + " is a dead FUSE mount (its daemon is gone) and "
               "detaching it failed: " + ErrnoText(errno);
      return false;
    }
    fprintf(stderr, "kqueued: detached a dead FUSE mount at %s\n",
            path.c_str());
  }
  *error = path + ": more than " + std::to_string(kMaxStaleMounts) +
           " dead FUSE mounts stacked there";
  return false;
}

std::string Describe(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device (a CUSE kqueued?)";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

bool IsMountedAt(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    MountinfoLine m;
    if (ParseMountinfoLine(line, &m) && m.mount_point == path) return true;
  }
  return false;
}

std::unique_ptr<MountPoint> MountPoint::Claim(const std::string& path,
                                              std::string* error) {
  std::string canonical;
  if (!Canonicalize(path, &canonical, error)) return nullptr;
  if (!DetachDeadMounts(canonical, error)) return nullptr;
  const std::string already_served =
      canonical + ": something is already mounted there (another kqueued "
                  "serving it?); refusing to mount over it";
  if (IsMountedAt(canonical)) {
    *error = already_served;
    return nullptr;
  }
  struct stat st;
  bool created = false;
  if (lstat(canonical.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      *error = canonical + " exists and is " + Describe(st.st_mode) +
               "; refusing to mount over it";
      return nullptr;
    }
  } else if (errno != ENOENT) {
    *error = canonical + ": " + ErrnoText(errno);
    return nullptr;
  } else {
    created = true;
  }

  // O_NOFOLLOW: a symlink swapped in since the lstat is refused, not
  // followed. O_NONBLOCK/O_NOCTTY: harmless for a regular file, and keep
  // open() from ever blocking or acquiring a terminal.
  ScopedFd fd(open(canonical.c_str(),
                   O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK |
                       O_NOCTTY,
                   0644));
  if (!fd.valid()) {
    *error = "cannot create or open " + canonical + ": " + ErrnoText(errno);
    return nullptr;
  }
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    *error = errno == EWOULDBLOCK
                 ? canonical + " is locked by another process (another "
                               "kqueued starting?)"
                 : "flock " + canonical + ": " + ErrnoText(errno);
    return nullptr;
  }
  // Checked again with the lock held: a daemon that mounted between our
  // checks and the open() has its file, not the placeholder, behind `fd`,
  // and a mount root lives on another device than the directory.
  struct stat file_st;
  struct stat dir_st;
  if (fstat(fd.get(), &file_st) != 0 ||
      stat(Dirname(canonical).c_str(), &dir_st) != 0) {
    *error = "stat " + canonical + ": " + ErrnoText(errno);
    return nullptr;
  }
  if (!S_ISREG(file_st.st_mode)) {
    *error = canonical + " is " + Describe(file_st.st_mode) +
             "; refusing to mount over it";
    return nullptr;
  }
  if (file_st.st_dev != dir_st.st_dev || IsMountedAt(canonical)) {
    *error = already_served;
    return nullptr;
  }
  return std::unique_ptr<MountPoint>(
      new MountPoint(std::move(canonical), std::move(fd), created));
}

MountPoint::MountPoint(std::string path, ScopedFd lock_fd, bool created)
    : path_(std::move(path)), lock_fd_(std::move(lock_fd)), created_(created) {}

MountPoint::~MountPoint() {
  Unmount();
  // A placeholder we made ourselves goes with us, so the device is gone when
  // the daemon is (and a later CUSE daemon can create /dev/NAME). One that
  // was there before is the administrator's and stays.
  if (created_) unlink(path_.c_str());
}

bool MountPoint::Mount(int fuse_fd, std::string* error) {
  char options[160];
  // rootmode: the type of the root inode (a regular file), which the kernel
  // checks against the mount point. user_id/group_id are required; without
  // allow_other only that user could reach the file.
  snprintf(options, sizeof(options),
           "fd=%d,rootmode=%o,user_id=%u,group_id=%u,allow_other", fuse_fd,
           static_cast<unsigned>(S_IFREG), static_cast<unsigned>(geteuid()),
           static_cast<unsigned>(getegid()));
  if (mount("kqueued", path_.c_str(), "fuse.kqueued",
            MS_NOSUID | MS_NODEV | MS_NOEXEC, options) != 0) {
    int err = errno;
    *error = "mounting FUSE over " + path_ + ": " + ErrnoText(err);
    if (err == EPERM) *error += " (the daemon must run as root)";
    return false;
  }
  mounted_ = true;
  return true;
}

void MountPoint::Unmount() {
  if (!mounted_) return;
  mounted_ = false;
  if (umount2(path_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0 &&
      errno != EINVAL) {  // EINVAL: already unmounted by someone else
    fprintf(stderr, "kqueued: unmounting %s: %s\n", path_.c_str(),
            strerror(errno));
  }
}

}  // namespace kqd
