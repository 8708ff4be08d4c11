// A mount namespace of the test's own whose table changes only by the
// test's own mount(2) calls — what EVFILT_FS tests need to expect exact
// VQ_* bits.
//
// unshare(CLONE_NEWNS) plus MS_REC|MS_PRIVATE on "/" stops propagation, but
// the copies of the mounts that existed at the unshare can still vanish: the
// kernel detaches every mount whose mount point is deleted, in every
// namespace. A test daemon elsewhere on the machine does exactly that when
// it stops (it unmounts its FUSE file and removes the directory), and
// EVFILT_FS then rightly reports VQ_UNMOUNT in our namespace too.
#ifndef KQUEUED_TESTS_SUPPORT_PRIVATE_MOUNTS_H_
#define KQUEUED_TESTS_SUPPORT_PRIVATE_MOUNTS_H_

namespace kqd {
namespace testing {

// In the calling process's mount namespace (which must be private to the
// test), lazily detaches every FUSE mount: kqueued test daemons, benchmark
// daemons and any other FUSE server whose mount point may disappear. A
// descriptor already open on such a file (a kqueue) keeps working. Returns
// the number detached, or -1 if the mount table cannot be read.
int DetachFuseMounts();

}  // namespace testing
}  // namespace kqd

#endif  // KQUEUED_TESTS_SUPPORT_PRIVATE_MOUNTS_H_
