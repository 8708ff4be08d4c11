#include "daemon/transport/serving_session.h"

namespace kqd {

std::unique_ptr<ServingSession> ServingSession::Create(DeviceHandler* handler,
                                                       std::string* error) {
  std::unique_ptr<SessionLoop> loop = SessionLoop::Create(error);
  if (!loop) return nullptr;
  return std::unique_ptr<ServingSession>(
      new ServingSession(std::move(loop), handler));
}

ServingSession::ServingSession(std::unique_ptr<SessionLoop> loop,
                               DeviceHandler* handler)
    : loop_(std::move(loop)), dispatcher_(handler, loop_.get()) {}

ServingSession::~ServingSession() {
  StopServing();
  Close();
}

bool ServingSession::Start(fuse_session* se, std::chrono::milliseconds timeout,
                           std::string* error) {
  if (!loop_->Start(se, error)) return false;
  if (!loop_->WaitReady(timeout)) {
    *error = loop_->running()
                 ? "the kernel did not send INIT in time"
                 : "the kernel closed the connection during INIT";
    return false;
  }
  return true;
}

void ServingSession::StopServing() {
  loop_->Stop();
  dispatcher_.Disconnect();
}

void ServingSession::Close() {
  StopServing();  // no-op if done already; never close under a running loop
  loop_->CloseSession();
  dispatcher_.ReleaseRemaining();
}

}  // namespace kqd
