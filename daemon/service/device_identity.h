// DeviceIdentity: recognises our own device by the file a descriptor refers
// to, never by a path's text. A client can reach the device under any name
// (a bind mount in its own mount namespace, a second device node); what it
// cannot forge is the file: the FUSE transport's device is the root of our
// FUSE superblock (one st_dev, whatever mount shows it), the CUSE
// transport's is a character device with our device number (st_rdev).
//
// The checks use statx(AT_STATX_DONT_SYNC): FUSE then answers from the
// inode it has and sends no request, so the daemon never asks itself a
// question it would have to answer while blocked in the asking.
#ifndef KQUEUED_DAEMON_SERVICE_DEVICE_IDENTITY_H_
#define KQUEUED_DAEMON_SERVICE_DEVICE_IDENTITY_H_

#include <sys/types.h>

#include <mutex>
#include <string>

#include "daemon/util/mutex.h"

struct statx;

namespace kqd {

class DeviceIdentity {
 public:
  // `path`: where the daemon serves the device. Its identity is learnt on
  // first use (clients can only hold the device once it is served).
  explicit DeviceIdentity(std::string path) : path_(std::move(path)) {}
  DeviceIdentity(const DeviceIdentity&) = delete;
  DeviceIdentity& operator=(const DeviceIdentity&) = delete;

  // Whether the daemon's own descriptor `fd` (a pidfd_getfd copy, say)
  // refers to the device.
  bool IsDevice(int fd) const;
  // IsDevice in two steps, for a caller that wants the statx too: the
  // statx IsDevice reads (StatCopy: false with errno on failure), and
  // whether such a statx is the device's.
  static bool StatCopy(int fd, struct statx* st);
  bool IsDeviceStat(const struct statx& st) const;
  // Whether descriptor `fd` of process `pid` refers to the device (through
  // /proc/<pid>/fd, which leads to the file itself). False if there is no
  // such descriptor.
  bool IsDeviceOf(pid_t pid, int fd) const;

 private:
  bool Matches(const struct statx& st) const EXCLUDES(mu_);

  const std::string path_;
  // The learnt identity. A leaf (one statx of our own path under it, which
  // AT_STATX_DONT_SYNC keeps from asking the daemon anything); taken under
  // a RemoteProcess's lock, which may be held under a kqueue's.
  mutable Mutex mu_;
  mutable bool known_ GUARDED_BY(mu_) = false;
  mutable bool is_char_ GUARDED_BY(mu_) = false;  // CUSE: match st_rdev; FUSE: st_dev
  mutable dev_t dev_ GUARDED_BY(mu_) = 0;         // makedev(major, minor) of either
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_DEVICE_IDENTITY_H_
