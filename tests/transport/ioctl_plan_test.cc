// The pure decision tables: ioctl transfer planning (incl. CUSE's
// unrestricted mode, which cannot run here), and the mount-point check.
#include <errno.h>
#include <sys/ioctl.h>

#include "daemon/transport/fuse_api.h"
#include "daemon/transport/fuse_request_dispatch.h"
#include "daemon/transport/mount_point.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"

namespace kqd {
namespace {

using Action = IoctlPlan::Action;

// FUSE_IOCTL_32BIT of <linux/fuse.h> (libfuse's headers do not export it);
// the kernel sets it together with FUSE_IOCTL_COMPAT.
constexpr uint32_t kIoctl32Bit = 1 << 3;

TEST(PlanIoctl, RestrictedDispatchesWhatArrived) {
  IoctlPlan p = PlanIoctl(KQ_IOC_KEVENT, 0, sizeof(kq_kevent_args),
                          sizeof(kq_kevent_args));
  EXPECT_EQ(p.action, Action::kDispatch);
  EXPECT_EQ(p.in_size, sizeof(kq_kevent_args));
  EXPECT_EQ(p.out_size, sizeof(kq_kevent_args));

  p = PlanIoctl(KQ_IOC_VERSION, 0, 0, sizeof(kq_version));
  EXPECT_EQ(p.action, Action::kDispatch);
  EXPECT_EQ(p.in_size, 0u);
  EXPECT_EQ(p.out_size, sizeof(kq_version));

  p = PlanIoctl(_IO('k', 0x50), 0, 0, 0);
  EXPECT_EQ(p.action, Action::kDispatch);
}

TEST(PlanIoctl, CompatCallersAreRejected) {
  IoctlPlan p = PlanIoctl(KQ_IOC_KEVENT, FUSE_IOCTL_COMPAT | kIoctl32Bit,
                          sizeof(kq_kevent_args), sizeof(kq_kevent_args));
  EXPECT_EQ(p.action, Action::kReject);
  EXPECT_EQ(p.error, EOPNOTSUPP);
  p = PlanIoctl(KQ_IOC_KEVENT, FUSE_IOCTL_COMPAT | FUSE_IOCTL_UNRESTRICTED, 0,
                0);
  EXPECT_EQ(p.action, Action::kReject);
}

TEST(PlanIoctl, UnrestrictedRetriesOnceThenDispatches) {
  const uint32_t flags = FUSE_IOCTL_UNRESTRICTED;
  IoctlPlan first = PlanIoctl(KQ_IOC_KEVENT, flags, 0, 0);
  ASSERT_EQ(first.action, Action::kRetry);
  EXPECT_EQ(first.in_size, sizeof(kq_kevent_args));
  EXPECT_EQ(first.out_size, sizeof(kq_kevent_args));
  // The kernel answers the retry with exactly the sizes asked for.
  IoctlPlan second =
      PlanIoctl(KQ_IOC_KEVENT, flags, first.in_size, first.out_size);
  EXPECT_EQ(second.action, Action::kDispatch);
  EXPECT_EQ(second.out_size, sizeof(kq_kevent_args));
}

// KQ_IOC_LOCAL_ATTACH (ABI 4) is an _IOW of 24 bytes: in only, on both
// transports (FUSE's restricted copy-in, CUSE's one retry).
TEST(PlanIoctl, LocalAttachIsInOnly) {
  IoctlPlan p = PlanIoctl(KQ_IOC_LOCAL_ATTACH, 0, sizeof(kq_local_attach), 0);
  EXPECT_EQ(p.action, Action::kDispatch);
  EXPECT_EQ(p.in_size, 24u);
  EXPECT_EQ(p.out_size, 0u);
  IoctlPlan first = PlanIoctl(KQ_IOC_LOCAL_ATTACH, FUSE_IOCTL_UNRESTRICTED, 0, 0);
  ASSERT_EQ(first.action, Action::kRetry);
  EXPECT_EQ(first.in_size, 24u);
  EXPECT_EQ(first.out_size, 0u);
  IoctlPlan second =
      PlanIoctl(KQ_IOC_LOCAL_ATTACH, FUSE_IOCTL_UNRESTRICTED, first.in_size, first.out_size);
  EXPECT_EQ(second.action, Action::kDispatch);
}

TEST(PlanIoctl, UnrestrictedDirectionsAreHonoured) {
  const uint32_t flags = FUSE_IOCTL_UNRESTRICTED;
  IoctlPlan read_only = PlanIoctl(KQ_IOC_VERSION, flags, 0, 0);
  ASSERT_EQ(read_only.action, Action::kRetry);
  EXPECT_EQ(read_only.in_size, 0u);
  EXPECT_EQ(read_only.out_size, sizeof(kq_version));
  EXPECT_EQ(PlanIoctl(KQ_IOC_VERSION, flags, 0, sizeof(kq_version)).action,
            Action::kDispatch);

  const uint32_t write_only = _IOW('k', 0x60, uint64_t);
  IoctlPlan w = PlanIoctl(write_only, flags, 0, 0);
  ASSERT_EQ(w.action, Action::kRetry);
  EXPECT_EQ(w.in_size, sizeof(uint64_t));
  EXPECT_EQ(w.out_size, 0u);
  EXPECT_EQ(PlanIoctl(write_only, flags, sizeof(uint64_t), 0).action,
            Action::kDispatch);

  // No argument buffer: dispatched at once, never retried.
  EXPECT_EQ(PlanIoctl(_IO('k', 0x61), flags, 0, 0).action, Action::kDispatch);
}

TEST(PlanIoctl, UnrestrictedNeverLoops) {
  // Whatever sizes arrive, a request is retried only from (0, 0), and every
  // retry's answer is either dispatched or rejected.
  const uint32_t flags = FUSE_IOCTL_UNRESTRICTED;
  const uint32_t cmds[] = {KQ_IOC_KEVENT, KQ_IOC_VERSION, KFILTER_BYNAME,
                           _IOW('k', 0x60, uint64_t), _IO('k', 0x61)};
  for (uint32_t cmd : cmds) {
    for (size_t in : {size_t{0}, size_t{1}, size_t{24}, size_t{56}}) {
      for (size_t out : {size_t{0}, size_t{1}, size_t{24}, size_t{64}}) {
        IoctlPlan p = PlanIoctl(cmd, flags, in, out);
        if (p.action != Action::kRetry) continue;
        EXPECT_EQ(in, 0u);
        EXPECT_EQ(out, 0u);
        EXPECT_NE(p.in_size + p.out_size, 0u);
        EXPECT_EQ(PlanIoctl(cmd, flags, p.in_size, p.out_size).action,
                  Action::kDispatch);
      }
    }
  }
  EXPECT_EQ(PlanIoctl(KQ_IOC_KEVENT, flags, 8, 8).action, Action::kReject);
  EXPECT_EQ(PlanIoctl(KQ_IOC_KEVENT, flags, 8, 8).error, EIO);
}

TEST(Mountinfo, RootIsMounted) {
  EXPECT_TRUE(IsMountedAt("/"));
  EXPECT_FALSE(IsMountedAt("/surely/not/a/mount/point"));
}

}  // namespace
}  // namespace kqd
