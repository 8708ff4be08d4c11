// The regular file a FUSE transport mounts over.
//
// Claiming it: resolve the path, detach a dead FUSE mount left there by a
// daemon that died (it answers ENOTCONN), refuse a live mount or anything
// that is not a regular file, create an empty placeholder if nothing is
// there, and hold an exclusive flock on the placeholder for as long as the
// transport lives, so two daemons starting at once cannot both mount.
//
// A placeholder the transport created is removed when it stops, so the
// device is gone with the daemon; one that existed before is left alone (it
// may be the administrator's file; ioctls on it fail ENOTTY).
#ifndef KQUEUED_DAEMON_TRANSPORT_MOUNT_POINT_H_
#define KQUEUED_DAEMON_TRANSPORT_MOUNT_POINT_H_

#include <memory>
#include <string>

#include "daemon/util/scoped_fd.h"

namespace kqd {

// True if /proc/self/mountinfo lists a mount whose mount point is `path`
// (canonical, absolute).
bool IsMountedAt(const std::string& path);

class MountPoint {
 public:
  // Null with *error when the file cannot be claimed.
  static std::unique_ptr<MountPoint> Claim(const std::string& path,
                                           std::string* error);
  // Unmount(), then drops the lock.
  ~MountPoint();

  MountPoint(const MountPoint&) = delete;
  MountPoint& operator=(const MountPoint&) = delete;

  // Absolute path with the directory part resolved.
  const std::string& path() const { return path_; }

  // mount(2)s the FUSE connection `fuse_fd` (an open /dev/fuse) here:
  // root a regular file, allow_other so every user can open it, and no
  // default_permissions (the daemon decides; the mode shown is 0666).
  bool Mount(int fuse_fd, std::string* error);

  // Lazily detaches the mount if this object made it. Call it after the
  // connection has been closed (the kernel then needs nothing from the
  // server to detach). Idempotent.
  void Unmount();

 private:
  MountPoint(std::string path, ScopedFd lock_fd, bool created);

  const std::string path_;
  const ScopedFd lock_fd_;  // the placeholder, flock'ed LOCK_EX
  const bool created_;  // the placeholder did not exist before Claim
  bool mounted_ = false;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_MOUNT_POINT_H_
