// The seam between a transport (CUSE device, FUSE-mounted file) and the
// kqueue service. A transport turns kernel requests into calls on a
// DeviceHandler; the handler answers through a Reply object, possibly long
// after the call returned (a kevent that waits is parked, never a blocked
// thread). The transport knows nothing of kqueues; the handler knows nothing
// of FUSE.
#ifndef KQUEUED_DAEMON_TRANSPORT_DEVICE_HANDLER_H_
#define KQUEUED_DAEMON_TRANSPORT_DEVICE_HANDLER_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>

namespace kqd {

// Who made a request, from the kernel's request header (never the payload).
struct Caller {
  pid_t tid = 0;  // calling thread's id (0: not visible in our pid namespace)
  uid_t uid = 0;  // effective uid
  gid_t gid = 0;  // effective gid
};

// One ioctl waiting for its answer. Exactly one of the Reply* methods must be
// called, once, from any thread. Destroying it unanswered replies EIO.
class IoctlReply {
 public:
  virtual ~IoctlReply() = default;
  // ioctl(2) returns `result` (>= 0); `out` (if any) is copied to the
  // caller's argument buffer (the _IOC_READ part of the command).
  virtual void ReplyOk(int result, const void* out, size_t out_size) = 0;
  // ioctl(2) fails with errno `error`.
  virtual void ReplyError(int error) = 0;
  // Called (from the transport's thread) if the caller is interrupted by a
  // signal while the request is parked. The handler should then answer
  // EINTR promptly. Set before parking; may be called after the reply was
  // sent, in which case it must do nothing.
  virtual void OnInterrupt(std::function<void()> fn) = 0;
  // True once the caller has been interrupted by a signal (a fatal one
  // included: a SIGKILLed caller waits for our answer), once the request was
  // answered, or once the transport is stopping. A handler working through a
  // long request (a large changelist) checks it between slices and answers
  // EINTR, so no caller stays stuck behind its own huge request and shutdown
  // is prompt. Cheap; callable from any thread.
  virtual bool Cancelled() const { return false; }
};

// poll(2)/epoll on the device: one pending notification handle.
class PollNotifier {
 public:
  virtual ~PollNotifier() = default;
  // Wakes the poller (fuse_lowlevel_notify_poll). Thread-safe.
  virtual void Notify() = 0;
};

class DeviceHandler {
 public:
  virtual ~DeviceHandler() = default;

  // open(2): a new kqueue. Returns 0 and sets *handle, or an errno.
  virtual int Open(const Caller& caller, uint64_t* handle) = 0;
  // The last close of what Open returned: release it and all its knotes.
  virtual void Release(uint64_t handle) = 0;
  // close(2) of one descriptor of `handle` by `caller` (the kernel's FLUSH,
  // sent on every close of any descriptor, dup or inherited copy, before
  // the last one's Release). Calls parked on `handle` through the closed
  // descriptor should end (EBADF). The default does nothing.
  virtual void Flush(uint64_t handle, const Caller& caller) {}
  // ioctl(2). `in` holds the _IOC_WRITE part of the argument (in_size bytes,
  // already copied by the kernel) and `arg` is the raw argument value (a
  // pointer in the caller's memory).
  virtual void Ioctl(uint64_t handle, const Caller& caller, uint32_t cmd,
                     uint64_t arg, const void* in, size_t in_size,
                     std::unique_ptr<IoctlReply> reply) = 0;
  // poll(2): return the ready mask now (POLLIN when events are pending). If
  // `notifier` is non-null, keep it and call Notify() once when readiness
  // may have changed (it replaces any notifier kept before for `handle`).
  virtual uint32_t Poll(uint64_t handle, std::unique_ptr<PollNotifier> notifier) = 0;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_TRANSPORT_DEVICE_HANDLER_H_
