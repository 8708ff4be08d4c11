// The device as a real character device, /dev/NAME, through CUSE.
//
// ioctls use CUSE's restricted mode (no CUSE_UNRESTRICTED_IOCTL): every
// command in the ABI is _IOR/_IOWR with its fixed-size struct, so the kernel
// copies _IOC_SIZE(cmd) bytes in and out itself, exactly as for the FUSE
// file, in one round trip (unrestricted mode would always cost a second one
// for the FUSE_IOCTL_RETRY). Data beyond the struct (kevent lists, names)
// is read and written with process_vm_* (caller_memory.h), as on FUSE.
#ifndef KQUEUED_DAEMON_TRANSPORT_CUSE_TRANSPORT_H_
#define KQUEUED_DAEMON_TRANSPORT_CUSE_TRANSPORT_H_

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>

#include "daemon/transport/device_handler.h"
#include "daemon/transport/transport.h"
#include "daemon/util/mutex.h"

namespace kqd {

class ServingSession;

class CuseTransport : public Transport {
 public:
  // Where CUSE is possible at all.
  static constexpr const char* kControlDevice = "/dev/cuse";

  // Creates /dev/`name` (name: letters, digits, '.', '_', '-') and serves
  // `handler`, which must outlive the transport. Refuses a name whose
  // /dev entry already exists. Returns once the kernel has created the
  // device and its node is present; the node's mode is then set to `mode`
  // (the kernel creates it 0600 root; a udev rule
  // SUBSYSTEM=="cuse", KERNEL=="kqueue", MODE="0666" may set it too).
  static std::unique_ptr<CuseTransport> Start(const std::string& name,
                                              DeviceHandler* handler,
                                              std::string* error,
                                              mode_t mode = 0666);
  ~CuseTransport() override;

  void Stop() override EXCLUDES(stop_mu_);
  const std::string& device_path() const override { return path_; }
  TransportKind kind() const override { return TransportKind::kCuse; }
  bool running() const override EXCLUDES(stop_mu_);

 private:
  CuseTransport(std::string path, std::unique_ptr<ServingSession> session);

  const std::string path_;

  // Serialises Stop() and guards the session. Held while the session
  // stops (its serving threads are joined, none of which takes it); taken
  // by whoever stops the daemon, with no other lock held.
  mutable Mutex stop_mu_;
  std::unique_ptr<ServingSession> session_ GUARDED_BY(stop_mu_);  // null once stopped
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_CUSE_TRANSPORT_H_
