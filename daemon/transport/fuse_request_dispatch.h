// Turns libfuse requests into DeviceHandler calls. Shared by the FUSE and the
// CUSE transport, which differ only in how the connection is set up (a mount
// over a file, or /dev/cuse); everything a client does with an open device
// goes through here, so the FUSE tests cover it for both.
//
// Threads: the libfuse entry points run on the session's loop thread. The
// IoctlReply and PollNotifier objects handed to the handler may be used from
// any thread and may outlive the transport; once the transport is stopped
// they do nothing (a parked ioctl has been answered ECONNABORTED by then).
#ifndef KQUEUED_DAEMON_TRANSPORT_FUSE_REQUEST_DISPATCH_H_
#define KQUEUED_DAEMON_TRANSPORT_FUSE_REQUEST_DISPATCH_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "daemon/transport/device_handler.h"
#include "daemon/util/mutex.h"

struct fuse_req;
struct fuse_file_info;
struct fuse_pollhandle;

namespace kqd {

class SessionLoop;
namespace dispatch_internal {
class ReplyChannel;
}  // namespace dispatch_internal

// What to do with an ioctl request, given its command and what the kernel
// copied in so far. Pure, so the decision table is unit-tested without a
// kernel (CUSE's unrestricted mode cannot run on the test machine).
struct IoctlPlan {
  enum class Action {
    kDispatch,  // hand it to the handler; reply at most `out_size` bytes
    kRetry,     // ask the kernel to copy `in_size` bytes in and `out_size`
                // bytes out at `arg` (FUSE_IOCTL_RETRY), then call again
    kReject,    // answer `error`
  };
  Action action = Action::kReject;
  size_t in_size = 0;
  size_t out_size = 0;
  int error = 0;
};

// `flags` are the FUSE_IOCTL_* flags of the request.
//  - FUSE_IOCTL_COMPAT (a 32-bit caller): rejected with EOPNOTSUPP. Its
//    commands encode 32-bit struct sizes and pointers; serving them would
//    need a second ABI. EOPNOTSUPP ("operation not supported on this
//    transport endpoint") tells the caller it is the caller's kind, not the
//    command, that is unsupported; ENOTTY would claim the command is unknown.
//  - restricted (FUSE regular files; CUSE without CUSE_UNRESTRICTED_IOCTL):
//    the kernel already copied _IOC_SIZE(cmd) bytes per _IOC_DIR(cmd):
//    dispatch with what arrived.
//  - FUSE_IOCTL_UNRESTRICTED: the first call always arrives with nothing
//    copied. Ask once for exactly _IOC_SIZE(cmd) in/out at arg; the retried
//    call then carries those sizes and is dispatched. Any other combination
//    is rejected with EIO, so the exchange can never loop (the kernel does
//    not bound retries).
IoctlPlan PlanIoctl(uint32_t cmd, uint32_t flags, size_t in_size,
                    size_t out_size);

// Requests of one uid that serving threads work on at the same time, at
// most. Further ioctls of that uid wait in its queue, holding no thread, and
// are taken in order by the uid's threads as they finish: a user whose
// requests are slow (huge changelists, pages on a slow filesystem) occupies
// at most this many threads, while the pool keeps idle threads for everyone
// else. A queued caller that is interrupted is answered EINTR at once.
constexpr int kBusyThreadsPerUid = 2;

class RequestDispatcher {
 public:
  // `handler` and `loop` must outlive the dispatcher.
  RequestDispatcher(DeviceHandler* handler, SessionLoop* loop);
  // Disconnect()s.
  ~RequestDispatcher();

  RequestDispatcher(const RequestDispatcher&) = delete;
  RequestDispatcher& operator=(const RequestDispatcher&) = delete;

  // ---- libfuse entry points (loop thread). The session's userdata must be
  // this dispatcher: they find it through fuse_req_userdata().

  // The kernel's INIT was answered (FUSE init / CUSE init_done).
  static void OnInit(void* userdata);
  static void OnOpen(fuse_req* req, fuse_file_info* fi);
  static void OnRelease(fuse_req* req, fuse_file_info* fi);
  // close(2) of a descriptor: tells the handler (DeviceHandler::Flush),
  // then answers at once; nothing is written back.
  static void OnFlush(fuse_req* req, fuse_file_info* fi);
  static void OnIoctl(fuse_req* req, uint32_t cmd, void* arg,
                      fuse_file_info* fi, unsigned flags, const void* in,
                      size_t in_size, size_t out_size);
  static void OnPoll(fuse_req* req, fuse_file_info* fi, fuse_pollhandle* ph);

  // ---- Shutdown, after the loop thread has stopped reading requests.

  // Answers every parked ioctl with ECONNABORTED (as the kernel does when a
  // server dies); afterwards replies and poll
  // notifications held by the handler do nothing. Idempotent.
  void Disconnect() EXCLUDES(lanes_mu_);
  // For tests and statistics: ioctls waiting in uid queues now.
  size_t queued_ioctls() const EXCLUDES(lanes_mu_);

  // After the session is closed (the kernel will send no more RELEASE):
  // Release() every handle that was opened and never released, so each
  // successful Open is paired with exactly one Release. Idempotent.
  void ReleaseRemaining() EXCLUDES(handles_mu_);

 private:
  // An ioctl taken off the wire, ready for the handler.
  struct QueuedIoctl {
    uint64_t id = 0;
    uint64_t handle = 0;
    Caller caller;
    uint32_t cmd = 0;
    uint64_t arg = 0;
    std::vector<char> in;  // a copy: libfuse's buffer is reused
    std::unique_ptr<IoctlReply> reply;
  };
  // Per uid: requests in the handler now, and those waiting for a turn.
  struct UidLane {
    int busy = 0;
    std::deque<QueuedIoctl> queue;
  };

  static RequestDispatcher* From(fuse_req* req);
  static void OnKernelInterrupt(fuse_req* req, void* data);
  // Runs `first` (whose uid already counts it as busy), then the uid's
  // queued ioctls, on the calling serving thread.
  void RunLane(QueuedIoctl first) EXCLUDES(lanes_mu_);
  // A queued ioctl's caller was interrupted: answer EINTR if still queued.
  void CancelQueued(uid_t uid, uint64_t id) EXCLUDES(lanes_mu_);

  DeviceHandler* const handler_;
  SessionLoop* const loop_;
  const std::shared_ptr<dispatch_internal::ReplyChannel> channel_;
  // Bumped by every serving thread that receives an ioctl: atomic, so two
  // concurrent ioctls never share an id (and a reply slot).
  std::atomic<uint64_t> next_ioctl_id_{1};

  // The uid lanes. First in the transport's order: queueing an ioctl sets
  // its interrupt callback under it (the reply channel's gate, shared, then
  // the ioctl's PendingIoctl::mu, then the session loop's lock to post).
  // Never held while the handler (the kqueue service) runs.
  mutable Mutex lanes_mu_;
  std::unordered_map<uid_t, UidLane> lanes_ GUARDED_BY(lanes_mu_);

  // Handles opened and not yet released, with their open count (a handler
  // should hand out distinct handles, but a count keeps Release pairing
  // exact even if it does not). A leaf; the handler runs without it.
  Mutex handles_mu_;
  std::unordered_map<uint64_t, int> open_handles_ GUARDED_BY(handles_mu_);
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_FUSE_REQUEST_DISPATCH_H_
