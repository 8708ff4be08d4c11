// The ABI is a contract with other languages: these tests pin every number
// and offset, so a change to proto/kqueue_abi.h that breaks bindings fails here.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"

namespace {

TEST(AbiLayout, KeventIsNetBsdLp64) {
  EXPECT_EQ(sizeof(kq_kevent), 40u);
  EXPECT_EQ(offsetof(kq_kevent, ident), 0u);
  EXPECT_EQ(offsetof(kq_kevent, filter), 8u);
  EXPECT_EQ(offsetof(kq_kevent, flags), 12u);
  EXPECT_EQ(offsetof(kq_kevent, fflags), 16u);
  EXPECT_EQ(offsetof(kq_kevent, data), 24u);
  EXPECT_EQ(offsetof(kq_kevent, udata), 32u);
  EXPECT_EQ(alignof(kq_kevent), 8u);
}

TEST(AbiLayout, KeventBytesRoundTrip) {
  // ident and udata must survive bit-exact, including the top bit.
  kq_kevent ev{};
  ev.ident = 0xfedcba9876543210ull;
  ev.udata = 0x8000000000000001ull;
  ev.data = -2;
  unsigned char raw[40];
  std::memcpy(raw, &ev, sizeof raw);
  EXPECT_EQ(raw[0], 0x10);  // little-endian ident at offset 0
  EXPECT_EQ(raw[7], 0xfe);
  EXPECT_EQ(raw[32], 0x01);  // udata at offset 32
  EXPECT_EQ(raw[39], 0x80);
  EXPECT_EQ(raw[24], 0xfe);  // data = -2 at offset 24
}

TEST(AbiLayout, KfilterMappingIsNetBsdLp64) {
  EXPECT_EQ(sizeof(kfilter_mapping), 24u);
  EXPECT_EQ(offsetof(kfilter_mapping, name), 0u);
  EXPECT_EQ(offsetof(kfilter_mapping, len), 8u);
  EXPECT_EQ(offsetof(kfilter_mapping, filter), 16u);
}

TEST(AbiLayout, KeventArgsAndVersion) {
  EXPECT_EQ(sizeof(kq_kevent_args), 56u);
  EXPECT_EQ(offsetof(kq_kevent_args, changelist), 0u);
  EXPECT_EQ(offsetof(kq_kevent_args, nchanges), 8u);
  EXPECT_EQ(offsetof(kq_kevent_args, eventlist), 16u);
  EXPECT_EQ(offsetof(kq_kevent_args, nevents), 24u);
  EXPECT_EQ(offsetof(kq_kevent_args, timeout_sec), 32u);
  EXPECT_EQ(offsetof(kq_kevent_args, timeout_nsec), 40u);
  EXPECT_EQ(offsetof(kq_kevent_args, flags), 48u);
  EXPECT_EQ(offsetof(kq_kevent_args, kq_fd), 52u);
  EXPECT_EQ(KQ_KEVENT_TIMEOUT, 1u);
  EXPECT_EQ(KQ_KEVENT_KQFD, 2u);
  EXPECT_EQ(sizeof(kq_version), 64u);
  EXPECT_EQ(offsetof(kq_version, daemon_version), 8u);
}

TEST(AbiConstants, IoctlNumbers) {
  EXPECT_EQ(KFILTER_BYFILTER, 0xC0186B00u);
  EXPECT_EQ(KFILTER_BYNAME, 0xC0186B01u);
  EXPECT_EQ(KQ_IOC_KEVENT, 0xC0386B40u);
  EXPECT_EQ(KQ_IOC_VERSION, 0x80406B41u);
  EXPECT_EQ(KQ_IOC_STAT, 0xC0206B42u);
  EXPECT_EQ(_IOC_SIZE(KQ_IOC_STAT), sizeof(kq_stat_args));
  EXPECT_EQ(_IOC_SIZE(KQ_IOC_KEVENT), sizeof(kq_kevent_args));
  EXPECT_EQ(KQ_IOC_KEVENT_INLINE_1, 0xC0486B50u);
  EXPECT_EQ(KQ_IOC_KEVENT_INLINE_8, 0xC1606B51u);
  EXPECT_EQ(KQ_IOC_KEVENT_INLINE_64, 0xCA206B52u);
  EXPECT_EQ(KQ_IOC_KEVENT_INLINE_408, 0xFFE06B53u);
  EXPECT_EQ(KQ_IOC_LOCAL_ATTACH, 0x40186B54u);
  EXPECT_EQ(_IOC_SIZE(KQ_IOC_LOCAL_ATTACH), sizeof(kq_local_attach));
  EXPECT_EQ(_IOC_DIR(KQ_IOC_LOCAL_ATTACH), static_cast<unsigned>(_IOC_WRITE));
  EXPECT_EQ(KQ_ABI_VERSION, 4u);
}

TEST(AbiLayout, LocalAttach) {
  EXPECT_EQ(sizeof(kq_local_attach), 24u);
  EXPECT_EQ(offsetof(kq_local_attach, epoll_fd), 0u);
  EXPECT_EQ(offsetof(kq_local_attach, flags), 4u);
  EXPECT_EQ(offsetof(kq_local_attach, tag), 8u);
  EXPECT_EQ(offsetof(kq_local_attach, reserved), 16u);
  // The new call flags stay clear of the ABI 1 ones.
  EXPECT_EQ((KQ_KEVENT_LOCAL_CHANGES | KQ_KEVENT_SKIP_LOCAL) &
                (KQ_KEVENT_TIMEOUT | KQ_KEVENT_KQFD),
            0u);
}

TEST(AbiLayout, InlineKevent) {
  EXPECT_EQ(sizeof(kq_kevent_inline), 32u);
  EXPECT_EQ(alignof(kq_kevent_inline), 8u);  // the records after it stay aligned
  EXPECT_EQ(offsetof(kq_kevent_inline, nchanges), 0u);
  EXPECT_EQ(offsetof(kq_kevent_inline, nevents), 4u);
  EXPECT_EQ(offsetof(kq_kevent_inline, flags), 8u);
  EXPECT_EQ(offsetof(kq_kevent_inline, kq_fd), 12u);
  EXPECT_EQ(offsetof(kq_kevent_inline, timeout_sec), 16u);
  EXPECT_EQ(offsetof(kq_kevent_inline, timeout_nsec), 24u);
  const struct {
    unsigned long cmd;
    unsigned nr, cap;
  } cmds[] = {{KQ_IOC_KEVENT_INLINE_1, 0x50, KQ_KEVENT_INLINE_CAP_1},
              {KQ_IOC_KEVENT_INLINE_8, 0x51, KQ_KEVENT_INLINE_CAP_8},
              {KQ_IOC_KEVENT_INLINE_64, 0x52, KQ_KEVENT_INLINE_CAP_64},
              {KQ_IOC_KEVENT_INLINE_408, 0x53, KQ_KEVENT_INLINE_CAP_408}};
  for (const auto& c : cmds) {
    EXPECT_EQ(_IOC_DIR(c.cmd), static_cast<unsigned>(_IOC_READ | _IOC_WRITE));
    EXPECT_EQ(_IOC_TYPE(c.cmd), static_cast<unsigned>('k'));
    EXPECT_EQ(_IOC_NR(c.cmd), c.nr);
    EXPECT_EQ(_IOC_SIZE(c.cmd), sizeof(kq_kevent_inline) + c.cap * sizeof(kq_kevent));
    EXPECT_EQ(_IOC_SIZE(c.cmd), KQ_KEVENT_INLINE_SIZE(c.cap));
  }
  // The largest fits the 14-bit size field and FUSE's restricted ioctl.
  EXPECT_EQ(KQ_KEVENT_INLINE_MAX, 408u);
  EXPECT_LE(KQ_KEVENT_INLINE_SIZE(KQ_KEVENT_INLINE_MAX), 16383u);
  EXPECT_GT(KQ_KEVENT_INLINE_SIZE(KQ_KEVENT_INLINE_MAX + 1), 16383u);
}

TEST(AbiConstants, IoctlNumbersAvoidVfsInterceptedCommands) {
  // The VFS answers these itself before FUSE/CUSE sees them.
  const unsigned long vfs[] = {FIOCLEX,       FIONCLEX,          FIONBIO,
                               FIOASYNC,      FIONREAD,          FIOQSIZE,
                               FIFREEZE,      FITHAW,            FS_IOC_FIEMAP,
                               FIGETBSZ,      FICLONE,           FICLONERANGE,
                               FIDEDUPERANGE, FS_IOC_GETFLAGS,   FS_IOC_SETFLAGS,
                               FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR};
  const unsigned long ours[] = {KFILTER_BYFILTER,       KFILTER_BYNAME,
                                KQ_IOC_KEVENT,          KQ_IOC_VERSION,
                                KQ_IOC_STAT,            KQ_IOC_KEVENT_INLINE_1,
                                KQ_IOC_KEVENT_INLINE_8, KQ_IOC_KEVENT_INLINE_64,
                                KQ_IOC_KEVENT_INLINE_408};
  for (unsigned long o : ours)
    for (unsigned long v : vfs) EXPECT_NE(o, v);
  for (unsigned long o : ours) EXPECT_EQ(_IOC_TYPE(o), 'k');
}

TEST(AbiConstants, FiltersAreNetBsdNumbers) {
  EXPECT_EQ(EVFILT_READ, 0u);
  EXPECT_EQ(EVFILT_WRITE, 1u);
  EXPECT_EQ(EVFILT_AIO, 2u);
  EXPECT_EQ(EVFILT_VNODE, 3u);
  EXPECT_EQ(EVFILT_PROC, 4u);
  EXPECT_EQ(EVFILT_SIGNAL, 5u);
  EXPECT_EQ(EVFILT_TIMER, 6u);
  EXPECT_EQ(EVFILT_FS, 7u);
  EXPECT_EQ(EVFILT_USER, 8u);
  EXPECT_EQ(EVFILT_EMPTY, 9u);
  EXPECT_EQ(EVFILT_SYSCOUNT, 10u);
}

TEST(AbiConstants, Flags) {
  EXPECT_EQ(EV_ADD, 0x1u);
  EXPECT_EQ(EV_DELETE, 0x2u);
  EXPECT_EQ(EV_ENABLE, 0x4u);
  EXPECT_EQ(EV_DISABLE, 0x8u);
  EXPECT_EQ(EV_ONESHOT, 0x10u);
  EXPECT_EQ(EV_CLEAR, 0x20u);
  EXPECT_EQ(EV_RECEIPT, 0x40u);
  EXPECT_EQ(EV_DISPATCH, 0x80u);
  EXPECT_EQ(EV_SYSFLAGS, 0xF000u);
  EXPECT_EQ(EV_FLAG1, 0x2000u);
  EXPECT_EQ(EV_ERROR, 0x4000u);
  EXPECT_EQ(EV_EOF, 0x8000u);
  EXPECT_EQ(EV_FLAG1 & EV_SYSFLAGS, EV_FLAG1);
  EXPECT_EQ(EV_ERROR & EV_SYSFLAGS, EV_ERROR);
  EXPECT_EQ(EV_EOF & EV_SYSFLAGS, EV_EOF);
}

TEST(AbiConstants, VnodeNotes) {
  EXPECT_EQ(NOTE_DELETE, 0x1u);
  EXPECT_EQ(NOTE_WRITE, 0x2u);
  EXPECT_EQ(NOTE_EXTEND, 0x4u);
  EXPECT_EQ(NOTE_ATTRIB, 0x8u);
  EXPECT_EQ(NOTE_LINK, 0x10u);
  EXPECT_EQ(NOTE_RENAME, 0x20u);
  EXPECT_EQ(NOTE_REVOKE, 0x40u);
  EXPECT_EQ(NOTE_OPEN, 0x80u);
  EXPECT_EQ(NOTE_CLOSE, 0x100u);
  EXPECT_EQ(NOTE_CLOSE_WRITE, 0x200u);
  EXPECT_EQ(NOTE_READ, 0x400u);
}

TEST(AbiConstants, ProcNotes) {
  EXPECT_EQ(NOTE_EXIT, 0x80000000u);
  EXPECT_EQ(NOTE_FORK, 0x40000000u);
  EXPECT_EQ(NOTE_EXEC, 0x20000000u);
  EXPECT_EQ(NOTE_PCTRLMASK, 0xf0000000u);
  EXPECT_EQ(NOTE_PDATAMASK, 0x000fffffu);
  EXPECT_EQ(NOTE_TRACK, 1u);
  EXPECT_EQ(NOTE_TRACKERR, 2u);
  EXPECT_EQ(NOTE_CHILD, 4u);
}

TEST(AbiConstants, UserTimerAndMisc) {
  EXPECT_EQ(NOTE_FFNOP, 0u);
  EXPECT_EQ(NOTE_FFAND, 0x40000000u);
  EXPECT_EQ(NOTE_FFOR, 0x80000000u);
  EXPECT_EQ(NOTE_FFCOPY, 0xc0000000u);
  EXPECT_EQ(NOTE_FFCTRLMASK, 0xc0000000u);
  EXPECT_EQ(NOTE_FFLAGSMASK, 0x00ffffffu);
  EXPECT_EQ(NOTE_TRIGGER, 0x01000000u);
  EXPECT_EQ(NOTE_MSECONDS, 0u);
  EXPECT_EQ(NOTE_SECONDS, 1u);
  EXPECT_EQ(NOTE_USECONDS, 2u);
  EXPECT_EQ(NOTE_NSECONDS, 3u);
  EXPECT_EQ(NOTE_ABSTIME, 0x10u);
  EXPECT_EQ(NOTE_LOWAT, 1u);
  EXPECT_EQ(VQ_MOUNT, 1u);
  EXPECT_EQ(VQ_UNMOUNT, 2u);
  EXPECT_EQ(KFILTER_MAXNAME, 256);
}

}  // namespace
