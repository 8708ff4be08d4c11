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

namespace kqd {
namespace testing {

class DaemonFixture {
 public:
  // Starts the daemon found in the test's runfiles (or $KQUEUED_BIN). With
  // $KQUEUED_EXTERNAL_DEVICE set, uses that already-served device instead.
  static std::unique_ptr<DaemonFixture> Start(std::string* error,
                                              const std::vector<std::string>& extra_args = {});
  ~DaemonFixture();

  const std::string& device() const { return device_; }
  pid_t pid() const { return pid_; }
  // Opens the device (a new kqueue); -1 with errno on failure.
  int OpenKqueue() const;

 private:
  DaemonFixture() = default;
  std::string dir_;
  std::string device_;
  pid_t pid_ = -1;
};

// A process-wide daemon for a test binary, started on first use.
DaemonFixture& SharedDaemon();

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_DAEMON_FIXTURE_H_
