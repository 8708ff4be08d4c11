// The device as a regular file on a one-file FUSE filesystem mounted over a
// placeholder at the device path (for kernels without CUSE). See
// mount_point.h for how the path is claimed and released.
#ifndef KQUEUED_DAEMON_TRANSPORT_FUSE_TRANSPORT_H_
#define KQUEUED_DAEMON_TRANSPORT_FUSE_TRANSPORT_H_

#include <memory>
#include <mutex>
#include <string>

#include "daemon/transport/device_handler.h"
#include "daemon/transport/transport.h"
#include "daemon/util/mutex.h"

namespace kqd {

class MountPoint;
class ServingSession;

class FuseTransport : public Transport {
 public:
  // Mounts at `path` (creating an empty placeholder file if nothing is
  // there) and serves `handler`, which must outlive the transport. Refuses,
  // with a clear *error, a path where something is mounted or that is not a
  // regular file; detaches a dead FUSE mount left by a crashed daemon.
  // Returns once the kernel's INIT is answered: opens work right away.
  static std::unique_ptr<FuseTransport> Start(const std::string& path,
                                              DeviceHandler* handler,
                                              std::string* error);
  ~FuseTransport() override;

  void Stop() override EXCLUDES(stop_mu_);
  const std::string& device_path() const override { return path_; }
  TransportKind kind() const override { return TransportKind::kFuse; }
  bool running() const override EXCLUDES(stop_mu_);

 private:
  FuseTransport(std::unique_ptr<MountPoint> mount,
                std::unique_ptr<ServingSession> session);

  const std::string path_;

  // Serialises Stop() and guards the two below. Held while the session
  // stops (its serving threads are joined, none of which takes it); taken
  // by whoever stops the daemon, with no other lock held.
  mutable Mutex stop_mu_;
  std::unique_ptr<ServingSession> session_ GUARDED_BY(stop_mu_);  // null once stopped
  std::unique_ptr<MountPoint> mount_ GUARDED_BY(stop_mu_);        // null once stopped
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_FUSE_TRANSPORT_H_
