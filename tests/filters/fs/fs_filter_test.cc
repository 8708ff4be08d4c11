// EVFILT_FS in-process: mounts and unmounts in the test process's mount
// namespace reported as NetBSD's VQ_MOUNT / VQ_UNMOUNT, EV_CLEAR implied,
// fflags given at registration ignored, one mount-table file per namespace.
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include "daemon/core/filter_registry.h"
#include "daemon/filters/fs/fs_filter.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"
#include "tests/support/private_mounts.h"

namespace {

using kqd::kFsVqMount;
using kqd::kFsVqUnmount;
using kqd::testing::Ev;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;

// NetBSD's <sys/mount.h> values.
static_assert(kFsVqMount == 0x1 && kFsVqUnmount == 0x2, "NetBSD's VQ_* values");

// EVFILT_FS reports every mount change in the owner's mount namespace, and
// other tests (and the machine) mount and unmount while this one runs. In a
// mount namespace of its own, with propagation off, the test sees only its
// own mounts. Done before any test makes a runtime: unshare(CLONE_NEWNS)
// needs a single-threaded process.
class PrivateMountNamespace : public ::testing::Environment {
 public:
  void SetUp() override {
    if (unshare(CLONE_NEWNS) == 0 &&
        mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0) {
      // Other tests' daemons' FUSE files, copied in, vanish when those
      // daemons stop (private_mounts.h): not a change of ours.
      kqd::testing::DetachFuseMounts();
    }
  }
};
// gtest takes ownership of the environment.
::testing::Environment* const kPrivateMounts =
    ::testing::AddGlobalTestEnvironment(new PrivateMountNamespace);

class FsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/fs.XXXXXX";
    ASSERT_NE(mkdtemp(&tmpl[0]), nullptr);
    dir_ = tmpl;
    mnt_ = dir_ + "/mnt";
    ASSERT_EQ(mkdir(mnt_.c_str(), 0755), 0);
    // Probe: can this process mount at all (root, or a user namespace)?
    if (mount("kqfs", mnt_.c_str(), "tmpfs", 0, "size=64k") != 0) {
      GTEST_SKIP() << "cannot mount tmpfs here: " << strerror(errno);
    }
    umount2(mnt_.c_str(), 0);
    q_ = rt_.NewQueue();
  }
  void TearDown() override {
    umount2(mnt_.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // The fflags of the EVFILT_FS events collected within `ms` (OR-ed), with
  // a short settling time for a second wake-up.
  std::optional<kq_kevent> Wait(long ms = 2000) {
    std::optional<kq_kevent> got;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (!got && std::chrono::steady_clock::now() < deadline) {
      for (const kq_kevent& ev : q_->Collect(8, 100)) {
        if (ev.filter != EVFILT_FS) continue;
        if (got) got->fflags |= ev.fflags;
        else got = ev;
      }
    }
    return got;
  }
  void Mount() { ASSERT_EQ(mount("kqfs", mnt_.c_str(), "tmpfs", 0, "size=64k"), 0); }
  void Unmount() { ASSERT_EQ(umount2(mnt_.c_str(), 0), 0); }

  std::string dir_, mnt_;
  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_;
};

TEST_F(FsTest, MountAndUnmountAreReported) {
  ASSERT_EQ(q_->Change(Ev(0, EVFILT_FS, EV_ADD, 0, 0, 0x55)), 0);
  EXPECT_TRUE(q_->Collect(8, 100).empty());  // nothing happened yet

  Mount();
  auto ev = Wait();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, kFsVqMount);
  EXPECT_EQ(ev->ident, 0u);
  EXPECT_EQ(ev->udata, 0x55u);
  EXPECT_EQ(ev->data, 0);
  EXPECT_EQ(ev->flags, EV_ADD | EV_CLEAR);  // EV_CLEAR implied, as NetBSD
  EXPECT_TRUE(q_->Collect(8, 100).empty());  // cleared after retrieval

  Unmount();
  ev = Wait();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, kFsVqUnmount);
}

TEST_F(FsTest, ChangesAccumulateUntilRetrieved) {
  ASSERT_EQ(q_->Change(Ev(0, EVFILT_FS, EV_ADD)), 0);
  Mount();
  // Let the daemon see the table with the mount: one that comes and goes
  // between two of its reads leaves no trace (fs_filter.h).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Unmount();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto ev = Wait();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, kFsVqMount | kFsVqUnmount);
}

TEST_F(FsTest, RemountIsAMount) {
  Mount();
  ASSERT_EQ(q_->Change(Ev(0, EVFILT_FS, EV_ADD)), 0);
  ASSERT_EQ(mount("kqfs", mnt_.c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, "size=64k"), 0);
  auto ev = Wait();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, kFsVqMount);
  Unmount();
  ev = Wait();
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, kFsVqUnmount);
}

TEST_F(FsTest, RequestedFflagsAndIdentDoNotMatter) {
  // filt_fs ignores kn_sfflags: every change is reported to every knote.
  ASSERT_EQ(q_->Change(Ev(7, EVFILT_FS, EV_ADD, kFsVqUnmount)), 0);
  ASSERT_EQ(q_->Change(Ev(8, EVFILT_FS, EV_ADD, 0)), 0);
  Mount();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto events = q_->Collect(8, 1000);
  ASSERT_EQ(events.size(), 2u);
  for (const kq_kevent& ev : events) EXPECT_EQ(ev.fflags, kFsVqMount);
  std::shared_ptr<kqd::FilterRegistration> reg;
  ASSERT_EQ(rt_.get()->filters().Acquire(EVFILT_FS, &reg), 0);
  auto* fs = dynamic_cast<kqd::FsFilter*>(reg->ops());
  ASSERT_NE(fs, nullptr);
  EXPECT_EQ(fs->mounts().namespace_count(), 1u);  // shared by both knotes
  ASSERT_EQ(q_->Change(Ev(7, EVFILT_FS, EV_DELETE)), 0);
  ASSERT_EQ(q_->Change(Ev(8, EVFILT_FS, EV_DELETE)), 0);
  EXPECT_EQ(fs->mounts().namespace_count(), 0u);  // its file closed
}

TEST_F(FsTest, UnrelatedFileChangesAreNotMounts) {
  ASSERT_EQ(q_->Change(Ev(0, EVFILT_FS, EV_ADD)), 0);
  ASSERT_EQ(mkdir((dir_ + "/x").c_str(), 0755), 0);
  EXPECT_TRUE(q_->Collect(8, 300).empty());
}

}  // namespace
