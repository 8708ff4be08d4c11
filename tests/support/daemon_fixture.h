// DaemonFixture: a private kqueued for one test binary — FUSE transport on a
// fresh temporary device path, exported as $KQUEUE_DEVICE so the client
// library finds it. Stopped with SIGTERM at the end; the test fails loudly if
// it cannot start.
#ifndef KQUEUED_TESTS_SUPPORT_DAEMON_FIXTURE_H_
#define KQUEUED_TESTS_SUPPORT_DAEMON_FIXTURE_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kqd {
namespace testing {

class DaemonFixture {
 public:
  // Starts the daemon found in the test's runfiles (or $KQUEUED_BIN). With
  // $KQUEUED_EXTERNAL_DEVICE set, uses that already-served device instead.
  // `nofile`, if nonzero, is the daemon's RLIMIT_NOFILE (soft and hard):
  // its descriptor budget, from which its per-user limits are sized.
  static std::unique_ptr<DaemonFixture> Start(std::string* error,
                                              const std::vector<std::string>& extra_args = {},
                                              unsigned long nofile = 0);
  ~DaemonFixture();

  const std::string& device() const { return device_; }
  pid_t pid() const { return pid_; }
  // Opens the device (a new kqueue); -1 with errno on failure.
  int OpenKqueue() const;

  // Sends `sig` to the daemon and reaps it; returns its wait status (-1 if
  // none was running). The device path is kept for Restart().
  int Stop(int sig);
  // Starts a new daemon on the same device path, with the same arguments,
  // after Stop(); false with *error if it does not become ready.
  bool Restart(std::string* error);

 private:
  DaemonFixture() = default;
  bool Spawn(std::string* error);
  std::vector<std::string> extra_args_;
  unsigned long nofile_ = 0;
  std::string dir_;
  std::string device_;
  pid_t pid_ = -1;
};

// A process-wide daemon for a test binary, started on first use.
DaemonFixture& SharedDaemon();

// A test with a new kqueue of the shared daemon in kq_, closed afterwards.
class SharedDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  int kq_ = -1;
};

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_DAEMON_FIXTURE_H_
