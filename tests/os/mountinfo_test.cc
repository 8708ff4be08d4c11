// The mountinfo line parser shared by EVFILT_FS/VNODE and the transport.
#include "daemon/os/mountinfo.h"

#include "gtest/gtest.h"

namespace kqd {
namespace {

TEST(Mountinfo, Unescape) {
  EXPECT_EQ(UnescapeMountinfoPath("/dev/kqueue"), "/dev/kqueue");
  EXPECT_EQ(UnescapeMountinfoPath("/tmp/a\\040b"), "/tmp/a b");
  EXPECT_EQ(UnescapeMountinfoPath("/x\\011y\\012z\\134w"), "/x\ty\nz\\w");
  EXPECT_EQ(UnescapeMountinfoPath("/trailing\\04"), "/trailing\\04");
  EXPECT_EQ(UnescapeMountinfoPath("/bad\\999"), "/bad\\999");
}

TEST(Mountinfo, ParsesTheLeadingFields) {
  MountinfoLine m;
  ASSERT_TRUE(ParseMountinfoLine(
      "36 35 98:0 /mnt\\0401 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw", &m));
  EXPECT_EQ(m.id, 36u);
  EXPECT_EQ(m.parent, 35u);
  EXPECT_EQ(m.dev, "98:0");
  EXPECT_EQ(m.root, "/mnt 1");
  EXPECT_EQ(m.mount_point, "/mnt/a b");
}

TEST(Mountinfo, RefusesAShortLine) {
  MountinfoLine m;
  EXPECT_FALSE(ParseMountinfoLine("36 35 98:0 /", &m));
  EXPECT_FALSE(ParseMountinfoLine("x 35 98:0 / /", &m));
  EXPECT_FALSE(ParseMountinfoLine("", &m));
}

}  // namespace
}  // namespace kqd
