// KqueueDevice: the kqueue service behind /dev/kqueue. Each open is a
// Kqueue; the ioctls of proto/kqueue_abi.h are served here. KQ_IOC_KEVENT
// reads and writes the caller's memory directly (process_vm_readv/writev),
// so there is no size ceiling beyond the caller's own counts; the
// KQ_IOC_KEVENT_INLINE_* commands carry their arrays in the argument.
#ifndef KQUEUED_DAEMON_SERVICE_KQUEUE_DEVICE_H_
#define KQUEUED_DAEMON_SERVICE_KQUEUE_DEVICE_H_

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/core/kqueue.h"
#include "daemon/core/runtime.h"
#include "daemon/service/answer_lanes.h"
#include "daemon/service/process_cache.h"
#include "daemon/transport/device_handler.h"
#include "daemon/util/mutex.h"

namespace kqd {

class KqueueDevice : public DeviceHandler {
 public:
  // `device_path`: where clients open us (their fds on it are recognised).
  KqueueDevice(Runtime* runtime, std::string device_path);
  ~KqueueDevice() override;

  int Open(const Caller& caller, uint64_t* handle) override EXCLUDES(mu_);
  void Release(uint64_t handle) override EXCLUDES(mu_);
  // Ends (EBADF) calls parked on the kqueue through a descriptor that is
  // now closed (issue 11 item 3).
  void Flush(uint64_t handle, const Caller& caller) override;
  void Ioctl(uint64_t handle, const Caller& caller, uint32_t cmd, uint64_t arg,
             const void* in, size_t in_size,
             std::unique_ptr<IoctlReply> reply) override;
  uint32_t Poll(uint64_t handle, std::unique_ptr<PollNotifier> notifier) override
      EXCLUDES(mu_);

  // Kqueues open on the device (tests: the fuzzer checks none leak).
  size_t open_kqueues() const EXCLUDES(mu_);

  // KQ_IOC_STAT's report for `caller`, leaving out the kqueue `self` (the
  // one asked through): the bytes of a kq_stat_header and its records, as
  // proto/kqueue_abi.h lays them out. Uid 0 sees every kqueue and user;
  // others only their own. pid > 0 keeps only that process's kqueues.
  std::string StatReport(const Caller& caller, uint64_t self, pid_t pid) const EXCLUDES(mu_);

 private:
  // The last poll handle of one kqueue; a readiness change wakes it once.
  struct PollSlot {
    // A leaf: taken by Poll (no other lock held) and by the kqueue's
    // readiness observer (run after the kqueue's lock is released).
    Mutex mu;
    std::unique_ptr<PollNotifier> notifier GUARDED_BY(mu);
  };
  struct Entry {
    std::shared_ptr<Kqueue> kq;
    uint64_t observer = 0;
    std::shared_ptr<PollSlot> poll;
    pid_t opener = 0;  // process that opened it (for kqstat); 0 if unknown
  };

  std::shared_ptr<Kqueue> Find(uint64_t handle) const EXCLUDES(mu_);
  // KQ_IOC_KEVENT: validates the argument block and starts the call.
  void Kevent(const std::shared_ptr<Kqueue>& kq, const Caller& caller,
              const void* in, size_t in_size, std::unique_ptr<IoctlReply> reply);
  // KQ_IOC_KEVENT_INLINE_* of `capacity` records: validates the header and
  // the counts (EINVAL beyond the capacity) and starts the call.
  void InlineKevent(const std::shared_ptr<Kqueue>& kq, const Caller& caller, size_t capacity,
                    const void* in, size_t in_size, std::unique_ptr<IoctlReply> reply);
  // Whether a kevent's flags and kq_fd are acceptable (logs the refusal).
  bool ValidKeventFlags(const Caller& caller, uint32_t flags, int32_t kq_fd);
  // What both kevent forms share once validated: records the named
  // descriptor, hands `call` to the kqueue and, if it parks, arranges for
  // a close (EBADF) and a signal (EINTR) to end it.
  void StartKevent(const std::shared_ptr<Kqueue>& kq, CallerContext& context, uint32_t flags,
                   int32_t kq_fd, std::unique_ptr<KeventCall> call,
                   const std::shared_ptr<IoctlReply>& reply);
  // KQ_IOC_LOCAL_ATTACH (ABI 4): makes the caller's process the queue's
  // local owner, with an eventfd of ours in its epoll instance (see
  // proto/kqueue_abi.h and Kqueue::AttachLocal).
  void LocalAttach(const std::shared_ptr<Kqueue>& kq, const Caller& caller, const void* in,
                   size_t in_size, IoctlReply* reply);
  void FilterByName(const Caller& caller, const void* in, size_t in_size,
                    IoctlReply* reply);
  void FilterByNumber(const Caller& caller, const void* in, size_t in_size,
                      IoctlReply* reply);
  void Stat(uint64_t handle, const Caller& caller, const void* in, size_t in_size,
            IoctlReply* reply);

  Runtime* const runtime_;
  ProcessCache processes_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  // Set while a heap trim is scheduled (see Release); shared with the
  // reactor's timer callback, which may outlive the device.
  const std::shared_ptr<std::atomic<bool>> trim_pending_ =
      std::make_shared<std::atomic<bool>>(false);

  // The open kqueues by handle. Taken by serving threads with no other lock
  // held, and released before any kqueue is used or closed (a kqueue's
  // lock is never taken under it); a leaf.
  mutable Mutex mu_;
  std::map<uint64_t, Entry> entries_ GUARDED_BY(mu_);
  uint64_t next_handle_ GUARDED_BY(mu_) = 1;

  // Where answers to parked kevent calls are written into the callers'
  // memory (see answer_lanes.h). Last, so it is destroyed first: its
  // threads finish before anything they use goes.
  AnswerLanes answer_lanes_;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_SERVICE_KQUEUE_DEVICE_H_
