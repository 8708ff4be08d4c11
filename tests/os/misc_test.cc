// daemon/os's file identity and fd limit, and daemon/util's saturating
// arithmetic.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <climits>

#include "daemon/os/fd_limit.h"
#include "daemon/os/file_identity.h"
#include "daemon/util/saturating.h"
#include "daemon/util/scoped_fd.h"
#include "gtest/gtest.h"

namespace kqd {
namespace {

TEST(FileIdentity, TellsFilesAndAccessModesApart) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ScopedFd r(p[0]), w(p[1]);
  FileIdentity ri, wi, again;
  ASSERT_EQ(ReadIdentity(r.get(), &ri), 0);
  ASSERT_EQ(ReadIdentity(w.get(), &wi), 0);
  EXPECT_EQ(ri.ino, wi.ino);            // one pipe inode
  EXPECT_NE(ri, wi);                    // read end vs write end
  ScopedFd dup(fcntl(r.get(), F_DUPFD_CLOEXEC, 0));
  ASSERT_EQ(ReadIdentity(dup.get(), &again), 0);
  EXPECT_EQ(ri, again);
  int q[2];
  ASSERT_EQ(pipe2(q, O_CLOEXEC), 0);
  ScopedFd qr(q[0]), qw(q[1]);
  ASSERT_EQ(ReadIdentity(qr.get(), &again), 0);
  EXPECT_NE(ri, again);                 // another pipe
  EXPECT_EQ(ReadIdentity(-1, &again), EBADF);
}

TEST(FdLimit, RaisesTheSoftLimitToTheHardOne) {
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  const rlim_t now = RaiseFdLimit();
  rlimit after{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(now, after.rlim_cur);
  EXPECT_EQ(after.rlim_cur, before.rlim_max);
  EXPECT_EQ(RaiseFdLimit(), now);  // idempotent
}

TEST(Saturating, ClampsBySignOfTheTrueResult) {
  EXPECT_EQ(SaturatingAdd(1, 2), 3);
  EXPECT_EQ(SaturatingAdd(INT64_MAX, 1), INT64_MAX);
  EXPECT_EQ(SaturatingAdd(INT64_MIN, -1), INT64_MIN);
  EXPECT_EQ(SaturatingAdd(INT64_MAX, INT64_MIN), -1);
  EXPECT_EQ(SaturatingMul(INT64_MAX, 2), INT64_MAX);
  EXPECT_EQ(SaturatingMul(INT64_MIN, 2), INT64_MIN);
  EXPECT_EQ(SaturatingMul(-3, INT64_MAX), INT64_MIN);
  EXPECT_EQ(SaturatingMul(-3, -4), 12);
}

}  // namespace
}  // namespace kqd
