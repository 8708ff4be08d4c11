// How the daemon shows up as /dev/kqueue: a CUSE character device, or a
// FUSE-mounted regular file where CUSE is not available. Both hand every
// open/ioctl/poll/close to a DeviceHandler and behave the same for clients.
#ifndef KQUEUED_DAEMON_TRANSPORT_TRANSPORT_H_
#define KQUEUED_DAEMON_TRANSPORT_TRANSPORT_H_

#include <memory>
#include <string>

#include "daemon/transport/device_handler.h"

namespace kqd {

enum class TransportKind {
  kAuto,  // CUSE if /dev/cuse exists, else FUSE
  kCuse,
  kFuse,
};

// "auto", "cuse", "fuse" (as on a command line). False for anything else.
bool ParseTransportKind(const std::string& text, TransportKind* kind);
const char* TransportKindName(TransportKind kind);

class Transport {
 public:
  virtual ~Transport() = default;

  // Stops serving: parked ioctls fail with ECONNABORTED, every handle still open is
  // Release()d, the device goes away (CUSE node removed, FUSE file
  // unmounted; a FUSE placeholder file stays). Afterwards clients still
  // holding the device get errors (ENOTCONN/ENODEV). Idempotent. Call it
  // from an ordinary thread (e.g. main after SIGTERM was taken with
  // signalfd/sigwait): it is not async-signal-safe and must not be called
  // from a DeviceHandler callback. The destructor calls it.
  virtual void Stop() = 0;

  // The path clients open.
  virtual const std::string& device_path() const = 0;

  // kCuse or kFuse.
  virtual TransportKind kind() const = 0;

  // False once stopped, or if the kernel ended the connection on its own
  // (an administrator unmounted the file or aborted the connection).
  virtual bool running() const = 0;
};

// Starts serving `handler` at `device_path`. For CUSE the path must be
// /dev/NAME (the node is created by the kernel as NAME). `handler` must
// outlive the transport. Returns null with *error on failure.
std::unique_ptr<Transport> StartTransport(TransportKind kind,
                                          const std::string& device_path,
                                          DeviceHandler* handler,
                                          std::string* error);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_TRANSPORT_H_
