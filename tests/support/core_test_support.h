// In-process harness for the core: a Runtime with the system filters and a
// running reactor, kqueues driven through a blocking kevent(), and the test
// process itself as the registering process.
#ifndef KQUEUED_TESTS_SUPPORT_CORE_TEST_SUPPORT_H_
#define KQUEUED_TESTS_SUPPORT_CORE_TEST_SUPPORT_H_

#include <time.h>

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "daemon/core/kqueue.h"
#include "daemon/core/process_context.h"
#include "daemon/core/runtime.h"
#include "proto/kqueue_abi.h"
#include "tests/support/ev.h"

namespace kqd {
namespace testing {

// The test process as a ProcessContext: fds are its own. Kqueues can be
// given fd numbers (an eventfd stands for each) so they can be nested.
class LocalProcess : public ProcessContext {
 public:
  pid_t pid() const override;
  uid_t ruid() const override;
  uid_t euid() const override;
  bool can_kill_any() const override { return euid() == 0; }
  // EOPNOTSUPP for an fd bound to a kqueue (as the daemon's own device).
  ScopedFd DupFd(int fd, int* error) const override;
  ScopedFd CopyFd(int fd, int* error) const override;
  std::shared_ptr<Kqueue> KqueueForFd(int fd) const override;
  // The test's own credentials: the kernel's check as itself.
  int CheckReadAccess(int file) const override;

  // Makes `fd` name `kq` for KqueueForFd.
  void BindKqueue(int fd, const std::shared_ptr<Kqueue>& kq);
  void UnbindKqueue(int fd);

 private:
  mutable std::mutex mu_;  // guards kqueues_
  std::map<int, std::weak_ptr<Kqueue>> kqueues_;
};

inline timespec Ms(long ms) {
  timespec ts{};
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  return ts;
}

// One kqueue plus its "fd" in the LocalProcess.
class TestQueue {
 public:
  TestQueue(Runtime* runtime, std::shared_ptr<LocalProcess> process);
  ~TestQueue();

  // kevent(2), blocking until answered. Returns the count, or -1 with
  // *error set (error may be null).
  int Kevent(const std::vector<kq_kevent>& changes,
             std::vector<kq_kevent>* events, size_t nevents,
             const timespec* timeout, int* error = nullptr);
  // The same call made by another process sharing the queue (after fork
  // or SCM_RIGHTS).
  int KeventAs(const std::shared_ptr<ProcessContext>& caller,
               const std::vector<kq_kevent>& changes,
               std::vector<kq_kevent>* events, size_t nevents,
               const timespec* timeout, int* error = nullptr);
  // A call with the ABI 4 flags (KQ_KEVENT_LOCAL_CHANGES / SKIP_LOCAL),
  // made by `caller` (null: the test process).
  int KeventLocal(uint32_t local_flags, const std::shared_ptr<ProcessContext>& caller,
                  const std::vector<kq_kevent>& changes, std::vector<kq_kevent>* events,
                  size_t nevents, const timespec* timeout, int* error = nullptr);
  // Just the changes, no collection; returns the errno of the call.
  int Change(const kq_kevent& change);
  // Collect with a timeout in ms (-1: forever).
  std::vector<kq_kevent> Collect(size_t nevents, long timeout_ms);

  // Starts a kevent that will park; the result arrives via the future-like
  // accessors. Used for interrupt and wake-up tests.
  struct Pending;
  std::shared_ptr<Pending> Start(size_t nevents, const timespec* timeout,
                                 uint64_t* wait_id);
  static bool WaitFor(const std::shared_ptr<Pending>& p, long timeout_ms,
                      int* result, int* error, std::vector<kq_kevent>* events);

  // Drops this queue's reference without closing the kqueue, as when a
  // client's last descriptor goes while a kevent still uses the queue:
  // whoever holds the last reference then destroys it. The fd stays bound
  // (weakly) until the TestQueue goes.
  void Abandon() { kq_.reset(); }

  Kqueue& kq() { return *kq_; }
  const std::shared_ptr<Kqueue>& shared() { return kq_; }
  int fd() const { return fd_.get(); }

 private:
  std::shared_ptr<LocalProcess> process_;
  std::shared_ptr<Kqueue> kq_;
  ScopedFd fd_;
};

// A Runtime with every system filter, its reactor running.
class TestRuntime {
 public:
  TestRuntime(LimitConfig limits = LimitConfig());
  ~TestRuntime();
  Runtime* get() { return runtime_.get(); }
  const std::shared_ptr<LocalProcess>& process() { return process_; }
  std::unique_ptr<TestQueue> NewQueue();
  // Lets the reactor finish what wake-ups already started: runs two rounds
  // of posted no-ops and waits for them. (In-process the "daemon" shares
  // the test's fd table, so a transient copy made by an evaluation on the
  // reactor thread could take the number a test expects the kernel to hand
  // out next.)
  void Quiesce();

 private:
  std::unique_ptr<Runtime> runtime_;
  std::shared_ptr<LocalProcess> process_;
};

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_CORE_TEST_SUPPORT_H_
