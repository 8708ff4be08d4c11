#include "tests/client/client_test_support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>

#include "tests/support/daemon_fixture.h"

extern char** environ;

namespace kqd {
namespace client_test {

void ClientTest::SetUp() { kqd::testing::SharedDaemon(); }

bool DaemonAccepts(const struct kevent& change, std::string* why) {
  kqd::testing::SharedDaemon();
  int kq = kqueue1(O_CLOEXEC);
  if (kq < 0) {
    *why = std::string("kqueue1: ") + strerror(errno);
    return false;
  }
  struct timespec zero = {0, 0};
  bool ok = kevent(kq, &change, 1, nullptr, 0, &zero) == 0;
  if (!ok) *why = strerror(errno);
  close(kq);
  return ok;
}

Child::Child(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) {
    ADD_FAILURE() << "pipe2: " << strerror(errno);
    return;
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << strerror(errno);
    close(fds[0]);
    close(fds[1]);
    return;
  }
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    execve(args[0], args.data(), environ);
    std::perror(args[0]);
    _exit(127);
  }
  close(fds[1]);
  pid_ = pid;
  out_ = fds[0];
}

Child::~Child() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
  if (out_ >= 0) close(out_);
}

bool Child::ReadLine(std::string* line, std::chrono::milliseconds timeout) {
  const int64_t deadline = NowMs() + timeout.count();
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      *line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return true;
    }
    int64_t left = deadline - NowMs();
    if (left <= 0 || out_ < 0) return false;
    struct pollfd p = {out_, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    char buf[4096];
    ssize_t n = read(out_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buffer_.append(buf, static_cast<size_t>(n));
    all_.append(buf, static_cast<size_t>(n));
  }
}

std::string Child::ReadAll(std::chrono::milliseconds timeout) {
  const int64_t deadline = NowMs() + timeout.count();
  while (out_ >= 0) {
    int64_t left = deadline - NowMs();
    if (left <= 0) break;
    struct pollfd p = {out_, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    char buf[4096];
    ssize_t n = read(out_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buffer_.append(buf, static_cast<size_t>(n));
    all_.append(buf, static_cast<size_t>(n));
  }
  return all_;
}

bool Child::Wait(int* status, std::chrono::milliseconds timeout) {
  const int64_t deadline = NowMs() + timeout.count();
  for (;;) {
    pid_t r = waitpid(pid_, status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return true;
    }
    if (r < 0 && errno != EINTR) return false;
    if (NowMs() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, status, 0);
      pid_ = -1;
      return false;
    }
    usleep(5000);
  }
}

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace client_test
}  // namespace kqd
