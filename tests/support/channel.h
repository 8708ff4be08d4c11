// Channel: one-way int32 messages between the processes of a test (a pipe,
// inherited over fork), for children to report pids and readiness.
#ifndef KQUEUED_TESTS_SUPPORT_CHANNEL_H_
#define KQUEUED_TESTS_SUPPORT_CHANNEL_H_

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>

namespace kqd {
namespace testing {

class Channel {
 public:
  Channel() {
    if (pipe2(fds_, O_CLOEXEC) != 0) abort();
  }
  ~Channel() {
    close(fds_[0]);
    close(fds_[1]);
  }
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // In a child: a failed write ends it with status 100.
  void Send(int32_t v) const {
    if (write(fds_[1], &v, sizeof v) != sizeof v) _exit(100);
  }
  // In the test; -1 on timeout.
  int32_t Receive(long timeout_ms = 10000) const {
    pollfd p{fds_[0], POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout_ms)) != 1) return -1;
    int32_t v;
    if (read(fds_[0], &v, sizeof v) != sizeof v) return -1;
    return v;
  }

 private:
  int fds_[2];
};

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_CHANNEL_H_
