#include "tests/support/core_test_support.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <future>

#include "daemon/filters/system_filters.h"

namespace kqd {
namespace testing {

pid_t LocalProcess::pid() const { return getpid(); }
uid_t LocalProcess::ruid() const { return getuid(); }
uid_t LocalProcess::euid() const { return geteuid(); }

ScopedFd LocalProcess::DupFd(int fd, int* error) const {
  // As the daemon's DupFd refuses its own device: a kqueue is not copied.
  if (KqueueForFd(fd)) {
    *error = EOPNOTSUPP;
    return ScopedFd();
  }
  return CopyFd(fd, error);
}

ScopedFd LocalProcess::CopyFd(int fd, int* error) const {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) *error = errno;
  return ScopedFd(copy);
}

std::shared_ptr<Kqueue> LocalProcess::KqueueForFd(int fd) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = kqueues_.find(fd);
  return it == kqueues_.end() ? nullptr : it->second.lock();
}

void LocalProcess::BindKqueue(int fd, const std::shared_ptr<Kqueue>& kq) {
  std::lock_guard<std::mutex> l(mu_);
  kqueues_[fd] = kq;
}

void LocalProcess::UnbindKqueue(int fd) {
  std::lock_guard<std::mutex> l(mu_);
  kqueues_.erase(fd);
}

struct TestQueue::Pending {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  int result = 0;
  int error = 0;
  std::vector<kq_kevent> changes;
  std::vector<kq_kevent> events;
};

namespace {

// A KeventCall over vectors; Complete() fills a Pending.
class VectorCall : public KeventCall {
 public:
  VectorCall(std::shared_ptr<ProcessContext> caller,
             std::shared_ptr<TestQueue::Pending> p, size_t nevents,
             const timespec* timeout, uint32_t local_flags = 0)
      : caller_(std::move(caller)), p_(std::move(p)), nevents_(nevents),
        has_timeout_(timeout != nullptr), local_flags_(local_flags) {
    if (timeout) timeout_ = *timeout;
    p_->events.assign(nevents, kq_kevent{});
  }
  const std::shared_ptr<ProcessContext>& caller() const override { return caller_; }
  size_t nchanges() const override { return p_->changes.size(); }
  size_t nevents() const override { return nevents_; }
  const timespec* timeout() const override { return has_timeout_ ? &timeout_ : nullptr; }
  uint32_t local_flags() const override { return local_flags_; }
  int FetchChanges(size_t first, kq_kevent* out, size_t n) override {
    for (size_t i = 0; i < n; i++) out[i] = p_->changes[first + i];
    return 0;
  }
  int PutEvents(size_t first, const kq_kevent* in, size_t n) override {
    if (first + n > nevents_) return EFAULT;
    for (size_t i = 0; i < n; i++) p_->events[first + i] = in[i];
    return 0;
  }
  void Complete(int result, int error) override {
    std::lock_guard<std::mutex> l(p_->mu);
    if (p_->done) abort();  // answered twice: a core bug
    p_->done = true;
    p_->result = result;
    p_->error = error;
    p_->events.resize(error == 0 ? static_cast<size_t>(result) : 0);
    p_->cv.notify_all();
  }

 private:
  std::shared_ptr<ProcessContext> caller_;
  std::shared_ptr<TestQueue::Pending> p_;
  size_t nevents_;
  bool has_timeout_;
  timespec timeout_{};
  uint32_t local_flags_;
};

}  // namespace

TestQueue::TestQueue(Runtime* runtime, std::shared_ptr<LocalProcess> process)
    : process_(std::move(process)) {
  int err = 0;
  kq_ = Kqueue::Create(runtime, getuid(), &err);
  fd_.reset(eventfd(0, EFD_CLOEXEC));
  if (kq_) process_->BindKqueue(fd_.get(), kq_);
}

TestQueue::~TestQueue() {
  process_->UnbindKqueue(fd_.get());
  if (kq_) kq_->Close();
}

std::shared_ptr<TestQueue::Pending> TestQueue::Start(size_t nevents,
                                                     const timespec* timeout,
                                                     uint64_t* wait_id) {
  auto p = std::make_shared<Pending>();
  uint64_t id = kq_->Kevent(std::make_unique<VectorCall>(process_, p, nevents, timeout));
  if (wait_id) *wait_id = id;
  return p;
}

bool TestQueue::WaitFor(const std::shared_ptr<Pending>& p, long timeout_ms,
                        int* result, int* error, std::vector<kq_kevent>* events) {
  std::unique_lock<std::mutex> l(p->mu);
  if (timeout_ms < 0) {
    p->cv.wait(l, [&] { return p->done; });
  } else if (!p->cv.wait_for(l, std::chrono::milliseconds(timeout_ms),
                             [&] { return p->done; })) {
    return false;
  }
  if (result) *result = p->result;
  if (error) *error = p->error;
  if (events) *events = p->events;
  return true;
}

int TestQueue::Kevent(const std::vector<kq_kevent>& changes,
                      std::vector<kq_kevent>* events, size_t nevents,
                      const timespec* timeout, int* error) {
  return KeventAs(process_, changes, events, nevents, timeout, error);
}

int TestQueue::KeventAs(const std::shared_ptr<ProcessContext>& caller,
                        const std::vector<kq_kevent>& changes,
                        std::vector<kq_kevent>* events, size_t nevents,
                        const timespec* timeout, int* error) {
  auto p = std::make_shared<Pending>();
  p->changes = changes;
  kq_->Kevent(std::make_unique<VectorCall>(caller, p, nevents, timeout));
  int result = 0, err = 0;
  std::vector<kq_kevent> got;
  WaitFor(p, -1, &result, &err, &got);
  if (events) *events = got;
  if (error) *error = err;
  return err ? -1 : result;
}

int TestQueue::KeventLocal(uint32_t local_flags, const std::shared_ptr<ProcessContext>& caller,
                           const std::vector<kq_kevent>& changes,
                           std::vector<kq_kevent>* events, size_t nevents,
                           const timespec* timeout, int* error) {
  auto p = std::make_shared<Pending>();
  p->changes = changes;
  kq_->Kevent(std::make_unique<VectorCall>(caller ? caller : process_, p, nevents, timeout,
                                           local_flags));
  int result = 0, err = 0;
  std::vector<kq_kevent> got;
  WaitFor(p, -1, &result, &err, &got);
  if (events) *events = got;
  if (error) *error = err;
  return err ? -1 : result;
}

int TestQueue::Change(const kq_kevent& change) {
  int err = 0;
  Kevent({change}, nullptr, 0, nullptr, &err);
  return err;
}

std::vector<kq_kevent> TestQueue::Collect(size_t nevents, long timeout_ms) {
  std::vector<kq_kevent> out;
  timespec ts = Ms(timeout_ms);
  Kevent({}, &out, nevents, timeout_ms < 0 ? nullptr : &ts);
  return out;
}

TestRuntime::TestRuntime(LimitConfig limits)
    : runtime_(std::make_unique<Runtime>(limits)),
      process_(std::make_shared<LocalProcess>()) {
  RegisterSystemFilters(runtime_.get());
  runtime_->reactor().Start();
}

TestRuntime::~TestRuntime() { runtime_->reactor().Stop(); }

std::unique_ptr<TestQueue> TestRuntime::NewQueue() {
  return std::make_unique<TestQueue>(runtime_.get(), process_);
}

void TestRuntime::Quiesce() {
  for (int i = 0; i < 2; i++) {
    std::promise<void> done;
    runtime_->reactor().Post([&done] { done.set_value(); });
    done.get_future().wait();
  }
}

int LocalProcess::CheckReadAccess(int file) const {
  return syscall(SYS_faccessat2, file, "", R_OK, AT_EMPTY_PATH | AT_EACCESS) == 0 ? 0 : errno;
}

}  // namespace testing
}  // namespace kqd
