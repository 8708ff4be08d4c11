#include "daemon/transport/session_loop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "daemon/transport/fuse_api.h"

namespace kqd {

namespace {

// Requests handled per wake-up before queued tasks get a turn again, so a
// flood of requests cannot starve interrupt delivery.
constexpr int kRequestsPerBatch = 64;

std::string ErrnoText(const char* what, int err) {
  return std::string(what) + ": " + strerror(err);
}

}  // namespace

std::unique_ptr<SessionLoop> SessionLoop::Create(std::string* error) {
  ScopedFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) {
    *error = ErrnoText("eventfd", errno);
    return nullptr;
  }
  return std::unique_ptr<SessionLoop>(new SessionLoop(std::move(wake)));
}

SessionLoop::SessionLoop(ScopedFd wake_fd) : wake_fd_(std::move(wake_fd)) {}

SessionLoop::~SessionLoop() {
  Stop();
  CloseSession();
}

bool SessionLoop::Start(fuse_session* se, std::string* error) {
  session_ = se;
  {
    std::lock_guard<std::mutex> lock(mu_);
    started_ = true;
  }
  int fd = fuse_session_fd(se);
  int flags = fcntl(fd, F_GETFL);
  // Non-blocking, so a request the kernel withdraws between poll() and
  // read() (an interrupted caller) cannot leave the loop stuck in read().
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    *error = ErrnoText("fcntl(O_NONBLOCK) on the FUSE fd", errno);
    std::lock_guard<std::mutex> lock(mu_);
    ended_ = true;
    return false;
  }
  // Start the thread with every signal blocked (the mask is inherited), so
  // there is no window in which it could take a process-directed signal.
  sigset_t all;
  sigset_t old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { Run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return true;
}

void SessionLoop::Post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back(std::move(task));
  }
  Wake();
}

void SessionLoop::Wake() {
  uint64_t one = 1;
  // EAGAIN would mean the counter is already huge, i.e. a wake-up is pending.
  ssize_t n = write(wake_fd_.get(), &one, sizeof(one));
  (void)n;
}

void SessionLoop::MarkReady() {
  std::lock_guard<std::mutex> lock(mu_);
  ready_ = true;
  state_changed_.notify_all();
}

bool SessionLoop::WaitReady(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  state_changed_.wait_for(lock, timeout, [this] { return ready_ || ended_; });
  return ready_ && !ended_;
}

bool SessionLoop::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return started_ && !ended_;
}

void SessionLoop::Stop() {
  if (!thread_.joinable()) return;
  if (thread_.get_id() == std::this_thread::get_id()) {
    // A handler callback asked to stop its own transport: joining would
    // deadlock. This is a programming error, not a runtime condition.
    fprintf(stderr, "kqueued: transport stopped from its own loop thread\n");
    abort();
  }
  stop_requested_.store(true);
  Wake();
  thread_.join();
}

void SessionLoop::CloseSession() {
  if (session_ == nullptr) return;
  // fuse_session_destroy closes the fd; nothing else owns it.
  fuse_session_destroy(session_);
  session_ = nullptr;
}

void SessionLoop::RunTasks() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks.swap(tasks_);
  }
  // Outside the lock: a task may Post() again.
  for (auto& task : tasks) task();
}

void SessionLoop::Run() {
  struct fuse_buf buf;
  memset(&buf, 0, sizeof(buf));  // libfuse allocates buf.mem on first use
  struct pollfd fds[2];
  fds[0].fd = fuse_session_fd(session_);
  fds[0].events = POLLIN;
  fds[1].fd = wake_fd_.get();
  fds[1].events = POLLIN;

  bool connection_ended = false;
  while (!connection_ended && !stop_requested_.load()) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "kqueued: transport poll: %s\n", strerror(errno));
      break;
    }
    if (fds[1].revents != 0) {
      uint64_t count;
      ssize_t n = read(wake_fd_.get(), &count, sizeof(count));
      (void)n;
    }
    if (stop_requested_.load()) break;
    RunTasks();
    if (fds[0].revents == 0) continue;
    // POLLERR/POLLHUP too: the read below then reports how the connection
    // ended (ENODEV → libfuse marks the session exited and returns 0).
    for (int i = 0; i < kRequestsPerBatch && !stop_requested_.load(); ++i) {
      int res = fuse_session_receive_buf(session_, &buf);
      if (res == -EAGAIN) break;
      if (res == -EINTR) continue;
      if (res == 0 || fuse_session_exited(session_)) {
        connection_ended = true;
        break;
      }
      if (res < 0) {
        // Short reads (EIO) and allocation failures concern one request;
        // anything else means the fd is unusable.
        if (res == -EIO || res == -ENOMEM) continue;
        fprintf(stderr, "kqueued: reading the FUSE connection: %s\n",
                strerror(-res));
        connection_ended = true;
        break;
      }
      fuse_session_process_buf(session_, &buf);
      // Interrupt callbacks queued while processing run before the next
      // request, never inside a libfuse call.
      RunTasks();
    }
  }
  free(buf.mem);

  std::lock_guard<std::mutex> lock(mu_);
  ended_ = true;
  // Tasks left now are dropped: their requests are answered by the owner's
  // shutdown sequence, which runs after this thread has been joined.
  tasks_.clear();
  state_changed_.notify_all();
}

}  // namespace kqd
