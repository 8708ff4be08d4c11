#include "tests/support/daemon_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "proto/kqueue_abi.h"
#include "tests/support/runfiles.h"

namespace kqd {
namespace testing {
namespace {

std::string DaemonBinary() {
  if (const char* env = getenv("KQUEUED_BIN")) return env;
  return RunfilePath("daemon/kqueued");
}

}  // namespace

std::unique_ptr<DaemonFixture> DaemonFixture::Start(std::string* error,
                                                    const std::vector<std::string>& extra_args,
                                                    unsigned long nofile) {
  std::unique_ptr<DaemonFixture> f(new DaemonFixture());
  // A daemon started by someone else (the CUSE tier's VM): use it as is.
  if (const char* external = getenv("KQUEUED_EXTERNAL_DEVICE")) {
    f->device_ = external;
    setenv(KQ_DEVICE_ENV, external, 1);
    return f;
  }
  // Not under TEST_TMPDIR: an allow_other mount there must be reachable by
  // the unprivileged users some tests switch to.
  char tmpl[] = "/tmp/kqueued-test-XXXXXX";
  if (!mkdtemp(tmpl)) {
    *error = std::string("mkdtemp: ") + strerror(errno);
    return nullptr;
  }
  chmod(tmpl, 0755);
  f->dir_ = tmpl;
  f->device_ = f->dir_ + "/kqueue";
  f->extra_args_ = extra_args;
  f->nofile_ = nofile;
  if (!f->Spawn(error)) return nullptr;
  return f;
}

bool DaemonFixture::Spawn(std::string* error) {
  std::string bin = DaemonBinary();
  std::vector<std::string> args = {bin, "--device", device_, "--transport", "fuse",
                                   "--foreground"};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    *error = "fork failed";
    return false;
  }
  if (pid == 0) {
    if (nofile_ != 0) {
      rlimit rl{nofile_, nofile_};
      if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(126);
    }
    execv(bin.c_str(), argv.data());
    std::perror("exec kqueued");
    _exit(127);
  }
  pid_ = pid;
  // Ready when the device answers the version ioctl.
  for (int i = 0; i < 500; i++) {
    int fd = open(device_.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
      kq_version v{};
      int rc = ioctl(fd, KQ_IOC_VERSION, &v);
      close(fd);
      if (rc == 0 && v.abi_version == KQ_ABI_VERSION) {
        setenv(KQ_DEVICE_ENV, device_.c_str(), 1);
        return true;
      }
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      pid_ = -1;
      *error = "kqueued exited during start-up (binary " + bin + ")";
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  *error = "kqueued did not become ready within 10 s";
  return false;
}

int DaemonFixture::Stop(int sig) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

bool DaemonFixture::Restart(std::string* error) {
  if (pid_ > 0) {
    *error = "the daemon is still running";
    return false;
  }
  return Spawn(error);
}

DaemonFixture::~DaemonFixture() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status;
    waitpid(pid_, &status, 0);
  }
  if (!dir_.empty()) {
    // A daemon the test killed with SIGKILL leaves its dead mount behind.
    umount2(device_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    unlink(device_.c_str());
    rmdir(dir_.c_str());
  }
}

int DaemonFixture::OpenKqueue() const { return open(device_.c_str(), O_RDWR | O_CLOEXEC); }

DaemonFixture& SharedDaemon() {
  // A function-local static: destroyed (daemon stopped, mount gone) at exit.
  static std::unique_ptr<DaemonFixture> shared = [] {
    std::string error;
    auto f = DaemonFixture::Start(&error);
    if (!f) {
      std::fprintf(stderr, "cannot start kqueued: %s\n", error.c_str());
      std::abort();
    }
    return f;
  }();
  return *shared;
}

void SharedDaemonTest::SetUp() {
  kq_ = SharedDaemon().OpenKqueue();
  ASSERT_GE(kq_, 0) << std::strerror(errno);
}

void SharedDaemonTest::TearDown() {
  if (kq_ >= 0) close(kq_);
  kq_ = -1;
}

}  // namespace testing
}  // namespace kqd
