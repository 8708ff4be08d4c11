// RemoteProcess and DeviceIdentity on this very process, with a private
// daemon's device: the device is known by its file, and what a client claims
// about its kqueue descriptors (KQ_KEVENT_KQFD) is checked and bounded.
#include "daemon/service/remote_process.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "daemon/core/kqueue.h"
#include "daemon/core/runtime.h"
#include "daemon/service/device_identity.h"
#include "gtest/gtest.h"
#include "tests/support/daemon_fixture.h"

namespace kqd {
namespace {

// Whom the remembered names are charged to.
constexpr uid_t kUid = 4242;

class RemoteProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    device_path_ = testing::SharedDaemon().device();
    identity_ = std::make_unique<DeviceIdentity>(device_path_);
    int err = 0;
    self_ = RemoteProcess::Open(getpid(), identity_.get(), &runtime_.limits(), kUid, &err);
    ASSERT_NE(self_, nullptr) << err;
    kq_ = Kqueue::Create(&runtime_, getuid(), &err);
    ASSERT_NE(kq_, nullptr) << err;
  }
  void TearDown() override {
    for (int fd : fds_) close(fd);
  }
  int Keep(int fd) {
    if (fd >= 0) fds_.push_back(fd);
    return fd;
  }

  std::string device_path_;
  std::unique_ptr<DeviceIdentity> identity_;
  std::shared_ptr<RemoteProcess> self_;
  Runtime runtime_;
  std::shared_ptr<Kqueue> kq_;
  std::vector<int> fds_;
};

TEST_F(RemoteProcessTest, TheDeviceIsKnownByItsFile) {
  int dev = Keep(open(device_path_.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_GE(dev, 0);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  Keep(p[0]);
  Keep(p[1]);
  // A regular file next to the device: not it, though its path is close.
  std::string other = device_path_ + ".other";
  int file = Keep(open(other.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  ASSERT_GE(file, 0);
  unlink(other.c_str());

  EXPECT_TRUE(identity_->IsDevice(dev));
  EXPECT_TRUE(identity_->IsDeviceOf(getpid(), dev));
  EXPECT_FALSE(identity_->IsDevice(p[0]));
  EXPECT_FALSE(identity_->IsDeviceOf(getpid(), p[0]));
  EXPECT_FALSE(identity_->IsDevice(file));
  EXPECT_FALSE(identity_->IsDeviceOf(getpid(), 1 << 20));  // no such fd

  // DupFd hands out copies of other files, never of the device.
  int err = 0;
  EXPECT_TRUE(self_->DupFd(p[0], &err).valid());
  EXPECT_FALSE(self_->DupFd(dev, &err).valid());
  EXPECT_EQ(err, EOPNOTSUPP);

  // DupFdStat decides the same, from the statx it hands on: the copy's.
  struct statx st {};
  ScopedFd copy = self_->DupFdStat(p[0], &st, &err);
  ASSERT_TRUE(copy.valid());
  struct stat own;
  ASSERT_EQ(fstat(p[0], &own), 0);
  EXPECT_EQ(st.stx_ino, own.st_ino);
  EXPECT_TRUE(S_ISFIFO(st.stx_mode));
  copy = self_->DupFdStat(file, &st, &err);
  ASSERT_TRUE(copy.valid());
  EXPECT_TRUE(S_ISREG(st.stx_mode));
  err = 0;
  EXPECT_FALSE(self_->DupFdStat(dev, &st, &err).valid());
  EXPECT_EQ(err, EOPNOTSUPP);
  EXPECT_FALSE(self_->DupFdStat(1 << 20, &st, &err).valid());
  EXPECT_EQ(err, EBADF);
}

TEST_F(RemoteProcessTest, BogusKqueueDescriptorsAreNotRemembered) {
  // Descriptor numbers that are not open, or not the device: believed never,
  // so a client cannot grow the map with made-up numbers.
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  Keep(p[0]);
  Keep(p[1]);
  for (int fd = 100000; fd < 110000; fd++) self_->RememberKqueueFd(fd, kq_, &runtime_.limits(), kUid);
  self_->RememberKqueueFd(p[0], kq_, &runtime_.limits(), kUid);
  EXPECT_EQ(self_->remembered_kqueue_fds(), 0u);
  EXPECT_EQ(self_->KqueueForFd(p[0]), nullptr);

  int dev = Keep(open(device_path_.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_GE(dev, 0);
  self_->RememberKqueueFd(dev, kq_, &runtime_.limits(), kUid);
  EXPECT_EQ(self_->remembered_kqueue_fds(), 1u);
  EXPECT_EQ(self_->KqueueForFd(dev), kq_);
  // Another descriptor of the same open file is the same kqueue.
  int again = Keep(dup(dev));
  EXPECT_EQ(self_->KqueueForFd(again), kq_);
}

TEST_F(RemoteProcessTest, RememberedKqueueDescriptorsAreBounded) {
  int dev = Keep(open(device_path_.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_GE(dev, 0);
  const size_t n = RemoteProcess::kMaxKqueueFds + 50;
  for (size_t i = 0; i < n; i++) {
    int fd = Keep(dup(dev));
    ASSERT_GE(fd, 0);
    self_->RememberKqueueFd(fd, kq_, &runtime_.limits(), kUid);
  }
  EXPECT_EQ(self_->remembered_kqueue_fds(), RemoteProcess::kMaxKqueueFds);
  EXPECT_EQ(runtime_.limits().InUse(kUid, Resource::kKqueueNames), RemoteProcess::kMaxKqueueFds);
  // Entries of kqueues that are gone make room again.
  kq_.reset();
  int err = 0;
  auto fresh = Kqueue::Create(&runtime_, getuid(), &err);
  ASSERT_NE(fresh, nullptr);
  int fd = Keep(dup(dev));
  self_->RememberKqueueFd(fd, fresh, &runtime_.limits(), kUid);
  EXPECT_EQ(self_->remembered_kqueue_fds(), 1u);
  EXPECT_EQ(self_->KqueueForFd(fd), fresh);
  EXPECT_EQ(runtime_.limits().InUse(kUid, Resource::kKqueueNames), 1u);
}

TEST_F(RemoteProcessTest, RememberedKqueueDescriptorsAreChargedToTheUser) {
  // Issue 12 item 5: every process of a user may remember up to 256 names;
  // the user's ceiling bounds them all together (here two processes' worth
  // of one, as seen by a ceiling of 10).
  LimitConfig config;
  config.kqueue_names = 10;
  Runtime runtime(config);
  int err = 0;
  auto kq = Kqueue::Create(&runtime, getuid(), &err);
  ASSERT_NE(kq, nullptr);
  auto other = RemoteProcess::Open(getpid(), identity_.get(), &runtime_.limits(), kUid, &err);
  ASSERT_NE(other, nullptr);
  int dev = Keep(open(device_path_.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_GE(dev, 0);
  for (int i = 0; i < 8; i++) self_->RememberKqueueFd(Keep(dup(dev)), kq, &runtime.limits(), kUid);
  for (int i = 0; i < 8; i++) other->RememberKqueueFd(Keep(dup(dev)), kq, &runtime.limits(), kUid);
  EXPECT_EQ(self_->remembered_kqueue_fds(), 8u);
  EXPECT_EQ(other->remembered_kqueue_fds(), 2u);
  EXPECT_EQ(runtime.limits().InUse(kUid, Resource::kKqueueNames), 10u);
  // Another user is not affected.
  other->RememberKqueueFd(Keep(dup(dev)), kq, &runtime.limits(), kUid + 1);
  EXPECT_EQ(other->remembered_kqueue_fds(), 3u);
  // A process's names are given back with it.
  other.reset();
  EXPECT_EQ(runtime.limits().InUse(kUid, Resource::kKqueueNames), 8u);
  EXPECT_EQ(runtime.limits().InUse(kUid + 1, Resource::kKqueueNames), 0u);
  self_.reset();
  EXPECT_EQ(runtime.limits().InUse(kUid, Resource::kKqueueNames), 0u);
}

}  // namespace
}  // namespace kqd
