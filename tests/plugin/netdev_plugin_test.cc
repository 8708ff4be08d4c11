// Filters loaded at run time: kqueued --filter-plugin netdev_filter.so adds
// EVFILT_NETDEV, numbered from EVFILT_SYSCOUNT, visible through both KFILTER
// ioctls and usable in kevent. The test runs in a network namespace of its
// own (so is the daemon it starts), and flips a veth pair's carrier.
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "plugins/netdev/netdev_filter.h"
#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/raw_kevent.h"
#include "tests/support/runfiles.h"

namespace kqd {
namespace testing {
namespace {


int Ip(const std::string& args) { return system(("ip " + args + " >/dev/null 2>&1").c_str()); }

class NetdevPlugin : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // A private network namespace for this process and the daemon it forks.
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << strerror(errno);
    ASSERT_EQ(Ip("link add kqv0 type veth peer name kqv1"), 0);
    std::string error;
    daemon_ = DaemonFixture::Start(
        &error, {"--filter-plugin", RunfilePath("plugins/netdev/netdev_filter.so")});
    ASSERT_NE(daemon_, nullptr) << error;
  }
  static void TearDownTestSuite() { daemon_.reset(); }
  void SetUp() override {
    ASSERT_NE(daemon_, nullptr);
    kq_ = daemon_->OpenKqueue();
    ASSERT_GE(kq_, 0);
  }
  void TearDown() override { close(kq_); }

  uint32_t FilterNumber() {
    kfilter_mapping m{};
    m.name = const_cast<char*>(NETDEV_FILTER_NAME);
    EXPECT_EQ(ioctl(kq_, KFILTER_BYNAME, &m), 0) << strerror(errno);
    return m.filter;
  }

  static std::unique_ptr<DaemonFixture> daemon_;
  int kq_ = -1;
};

std::unique_ptr<DaemonFixture> NetdevPlugin::daemon_;

TEST_F(NetdevPlugin, AppearsInBothKfilterIoctls) {
  uint32_t number = FilterNumber();
  EXPECT_GE(number, EVFILT_SYSCOUNT);
  char name[KFILTER_MAXNAME];
  kfilter_mapping b{};
  b.name = name;
  b.len = sizeof name;
  b.filter = number;
  ASSERT_EQ(ioctl(kq_, KFILTER_BYFILTER, &b), 0);
  EXPECT_STREQ(name, NETDEV_FILTER_NAME);
}

TEST_F(NetdevPlugin, ReportsLinkUpAndDown) {
  uint32_t filter = FilterNumber();
  unsigned index = if_nametoindex("kqv0");
  ASSERT_NE(index, 0u);
  kq_kevent add{};
  add.ident = index;
  add.filter = filter;
  add.flags = EV_ADD;
  add.fflags = NOTE_LINKUP | NOTE_LINKDOWN | NOTE_LINKINV;
  add.udata = 0xabc;
  ASSERT_EQ(Kevent(kq_, &add, 1, nullptr, 0, 0), 0) << strerror(errno);
  kq_kevent out;
  EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 0), 0);

  // Carrier comes when both ends of the pair are up.
  ASSERT_EQ(Ip("link set kqv1 up"), 0);
  ASSERT_EQ(Ip("link set kqv0 up"), 0);
  ASSERT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 3000), 1);
  EXPECT_EQ(out.ident, index);
  EXPECT_EQ(out.filter, filter);
  EXPECT_EQ(out.fflags, NOTE_LINKUP);
  EXPECT_TRUE(out.data & IFF_RUNNING);
  EXPECT_EQ(out.udata, 0xabcu);

  ASSERT_EQ(Ip("link set kqv1 down"), 0);
  ASSERT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 3000), 1);
  EXPECT_EQ(out.fflags, NOTE_LINKDOWN);
  EXPECT_FALSE(out.data & IFF_RUNNING);
  EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 0), 0);  // EV_CLEAR: once

  ASSERT_EQ(Ip("link del kqv0"), 0);
  ASSERT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 3000), 1);
  EXPECT_TRUE(out.fflags & NOTE_LINKINV);
  EXPECT_TRUE(out.flags & EV_EOF);
}

TEST_F(NetdevPlugin, UnknownInterfaceIsEnxio) {
  kq_kevent add{};
  add.ident = 999999;
  add.filter = FilterNumber();
  add.flags = EV_ADD;
  EXPECT_EQ(Kevent(kq_, &add, 1, nullptr, 0, 0), -1);
  EXPECT_EQ(errno, ENXIO);
}

TEST(PluginLoading, BadPluginsAreRefusedAtStart) {
  std::string error;
  auto d = DaemonFixture::Start(&error, {"--filter-plugin", "/nonexistent/plugin.so"});
  EXPECT_EQ(d, nullptr);
  EXPECT_NE(error.find("exited during start-up"), std::string::npos) << error;
  // A shared object that is not a plug-in: libc has no kqueued_plugin_init.
  d = DaemonFixture::Start(&error, {"--filter-plugin", "libc.so.6"});
  EXPECT_EQ(d, nullptr);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
