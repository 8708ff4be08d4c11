// A started libfuse session and everything that serves it: the loop thread
// and the request dispatcher. Both transports build one of these around the
// session they set up, so the start and stop sequences exist once.
#ifndef KQUEUED_DAEMON_TRANSPORT_SERVING_SESSION_H_
#define KQUEUED_DAEMON_TRANSPORT_SERVING_SESSION_H_

#include <chrono>
#include <memory>
#include <string>

#include "daemon/transport/device_handler.h"
#include "daemon/transport/fuse_request_dispatch.h"
#include "daemon/transport/session_loop.h"

struct fuse_session;

namespace kqd {

class ServingSession {
 public:
  // `handler` must outlive the ServingSession.
  static std::unique_ptr<ServingSession> Create(DeviceHandler* handler,
                                                std::string* error);
  // StopServing(), then Close().
  ~ServingSession();

  ServingSession(const ServingSession&) = delete;
  ServingSession& operator=(const ServingSession&) = delete;

  // The userdata to give fuse_session_new / cuse_lowlevel_new.
  void* userdata() { return &dispatcher_; }

  // Takes ownership of `se` (also on failure), whose fd is connected, starts
  // the loop and waits up to `timeout` for the kernel's INIT to be answered.
  bool Start(fuse_session* se, std::chrono::milliseconds timeout,
             std::string* error);

  // False once the connection has ended or StopServing() was called.
  bool running() const { return loop_->running(); }

  // Stops reading requests and answers parked ioctls with ECONNABORTED; replies and
  // notifications held by the handler do nothing afterwards. The connection
  // itself stays open (a FUSE mount is still in place). Idempotent.
  void StopServing();

  // After StopServing(): closes the connection and releases every handle
  // the kernel will now never release. Idempotent.
  void Close();

 private:
  ServingSession(std::unique_ptr<SessionLoop> loop, DeviceHandler* handler);

  // Declared in this order: the dispatcher refers to the loop.
  const std::unique_ptr<SessionLoop> loop_;
  RequestDispatcher dispatcher_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_SERVING_SESSION_H_
