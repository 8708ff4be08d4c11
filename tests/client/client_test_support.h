// Helpers shared by the client library tests: a fixture that starts the
// private daemon, probes for filters the daemon may not implement yet, and
// runs helper programs from the runfiles with their output captured.
#ifndef KQUEUED_TESTS_CLIENT_CLIENT_TEST_SUPPORT_H_
#define KQUEUED_TESTS_CLIENT_CLIENT_TEST_SUPPORT_H_

#include <sys/event.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/runfiles.h"

namespace kqd {
namespace client_test {

// Every test talks to the shared private daemon (which sets $KQUEUE_DEVICE).
class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override;
};

// Whether the daemon accepts `change` (an EV_ADD) on a fresh kqueue; if not,
// *why says what it answered. Used to skip tests of filters that are not
// implemented yet instead of failing them.
bool DaemonAccepts(const struct kevent& change, std::string* why);

// Skips the current test unless the daemon accepts `change`.
#define KQ_SKIP_UNLESS_ACCEPTS(change, what)                                        \
  do {                                                                              \
    std::string kq_why_;                                                            \
    if (!::kqd::client_test::DaemonAccepts((change), &kq_why_))                     \
      GTEST_SKIP() << what << " is not available from the daemon (EV_ADD: " << kq_why_ \
                   << ")";                                                          \
  } while (0)

// One struct kevent (the client's) built in a line.
inline struct kevent Ev(uintptr_t ident, uint32_t filter, uint32_t flags, uint32_t fflags = 0,
                        int64_t data = 0, void* udata = nullptr) {
  struct kevent ev;
  std::memset(&ev, 0, sizeof ev);
  EV_SET(&ev, ident, filter, flags, fflags, data, udata);
  return ev;
}

// A child process with stdout (and stderr, merged) on a pipe. Killed and
// reaped by the destructor if still running.
class Child {
 public:
  // Starts argv[0] (a path) with the current environment.
  explicit Child(const std::vector<std::string>& argv);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }

  // Reads up to and including the next newline (stripped). False on EOF or
  // when nothing arrives in time.
  bool ReadLine(std::string* line, std::chrono::milliseconds timeout);
  // Reads all output until EOF or timeout; returns everything read so far,
  // including lines already returned by ReadLine.
  std::string ReadAll(std::chrono::milliseconds timeout);
  // Waits for exit; false (and the child is killed) on timeout. *status is
  // a waitpid() status.
  bool Wait(int* status, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffer_;  // read but not yet returned by ReadLine
  std::string all_;     // everything read
};

// Monotonic milliseconds since an arbitrary point.
int64_t NowMs();

}  // namespace client_test
}  // namespace kqd

#endif  // KQUEUED_TESTS_CLIENT_CLIENT_TEST_SUPPORT_H_
