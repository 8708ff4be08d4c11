// EVFILT_VNODE in-process (the test process is the registering process):
// every note with the fflags NetBSD reports (NetBSD's own t_vnode cases
// ported where they apply), directories, revocation by unmount, the
// NetBSD filt_vnode semantics (whole hints, no implied EV_CLEAR), which
// files are refused, lifetime, and the one shared inotify instance.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "daemon/core/filter_registry.h"
#include "daemon/filters/vnode/vnode_filter.h"
#include "daemon/os/inotify_mux.h"
#include "daemon/util/scoped_fd.h"
#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/core_test_support.h"

namespace {

using kqd::ScopedFd;
using kqd::VnodeStat;
using kqd::InotifyMux;
using kqd::testing::Ev;
using kqd::testing::TestQueue;
using kqd::testing::TestRuntime;

constexpr uint32_t kAllNotes = NOTE_DELETE | NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB |
                               NOTE_LINK | NOTE_RENAME | NOTE_REVOKE | NOTE_OPEN |
                               NOTE_CLOSE | NOTE_CLOSE_WRITE | NOTE_READ;

// A fresh directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/vnode.XXXXXX";
    path_ = mkdtemp(&tmpl[0]) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

ScopedFd OpenFile(const std::string& path, int flags = O_RDWR | O_CREAT) {
  return ScopedFd(open(path.c_str(), flags | O_CLOEXEC, 0644));
}

void Touch(const std::string& path) { OpenFile(path, O_WRONLY | O_CREAT); }

void PWrite(int fd, const std::string& s, off_t at) {
  ASSERT_EQ(pwrite(fd, s.data(), s.size(), at), static_cast<ssize_t>(s.size()));
}

// The first event for `ident` within `ms`, with the fflags of whatever else
// arrives for it within `settle_ms` after (one syscall may wake the reactor
// more than once) OR-ed in.
std::optional<kq_kevent> Gather(TestQueue& q, uint64_t ident, long ms = 2000,
                                long settle_ms = 100) {
  std::optional<kq_kevent> got;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!got) {
    long left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    for (const kq_kevent& ev : q.Collect(64, left > 0 ? left : 0)) {
      if (ev.ident != ident) continue;
      if (got) got->fflags |= ev.fflags;
      else got = ev;
    }
    if (left <= 0) break;
  }
  if (!got) return got;
  for (const kq_kevent& ev : q.Collect(64, settle_ms))
    if (ev.ident == ident) got->fflags |= ev.fflags;
  return got;
}

// fflags of the event for `ident`, 0 if none came.
uint32_t Notes(TestQueue& q, uint64_t ident, long ms = 2000) {
  auto ev = Gather(q, ident, ms);
  return ev ? ev->fflags : 0;
}

bool Quiet(TestQueue& q, long ms = 150) { return q.Collect(64, ms).empty(); }

kqd::VnodeFilter* VnodeOps(TestRuntime& rt) {
  std::shared_ptr<kqd::FilterRegistration> reg;
  if (rt.get()->filters().Acquire(EVFILT_VNODE, &reg) != 0) return nullptr;
  return dynamic_cast<kqd::VnodeFilter*>(reg->ops());
}

class VnodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    q_ = rt_.NewQueue();
  }
  int Add(int fd, uint32_t fflags, uint32_t flags = EV_CLEAR, uint64_t udata = 0) {
    return q_->Change(Ev(fd, EVFILT_VNODE, EV_ADD | flags, fflags, 0, udata));
  }

  TempDir dir_;
  TestRuntime rt_;
  std::unique_ptr<TestQueue> q_;
};

// ---- Regular files ----------------------------------------------------------

TEST_F(VnodeTest, WriteThenOverwriteThenAppend) {
  ScopedFd fd = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), kAllNotes, EV_CLEAR, 0xfeedULL), 0);
  EXPECT_TRUE(Quiet(*q_));  // registering reports nothing

  PWrite(fd.get(), "hello", 0);
  auto ev = Gather(*q_, fd.get());
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, NOTE_WRITE | NOTE_EXTEND);
  EXPECT_EQ(ev->filter, EVFILT_VNODE);
  EXPECT_EQ(ev->udata, 0xfeedULL);
  EXPECT_EQ(ev->data, 0);
  EXPECT_EQ(ev->flags, EV_ADD | EV_CLEAR);

  PWrite(fd.get(), "HELLO", 0);  // same size: no EXTEND
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_WRITE);
  PWrite(fd.get(), "!", 5);  // one more byte
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_WRITE | NOTE_EXTEND);
  EXPECT_TRUE(Quiet(*q_));
}

TEST_F(VnodeTest, WholeHintIsReportedWhenAnyBitWasAsked) {
  // NetBSD's filt_vnode: kn_fflags |= hint if (kn_sfflags & hint). Its own
  // test asks for NOTE_WRITE and requires NOTE_EXTEND on an append.
  ScopedFd fd = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), NOTE_WRITE), 0);
  PWrite(fd.get(), "abc", 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_WRITE | NOTE_EXTEND);
  // ...but a hint with nothing asked for is not reported at all.
  ASSERT_EQ(fchmod(fd.get(), 0600), 0);
  EXPECT_TRUE(Quiet(*q_));
}

TEST_F(VnodeTest, TruncateDownIsAttrib) {
  // NetBSD's setattr path posts NOTE_ATTRIB (|NOTE_EXTEND when it grows).
  ScopedFd fd = OpenFile(dir_ / "f");
  PWrite(fd.get(), "0123456789", 0);
  ASSERT_EQ(Add(fd.get(), kAllNotes), 0);
  ASSERT_EQ(ftruncate(fd.get(), 3), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_ATTRIB);
}

TEST_F(VnodeTest, ChmodChownUtimesAreAttrib) {
  ScopedFd fd = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), kAllNotes), 0);
  ASSERT_EQ(fchmod(fd.get(), 0600), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_ATTRIB);
  ASSERT_EQ(futimens(fd.get(), nullptr), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_ATTRIB);
  ASSERT_EQ(fchown(fd.get(), getuid(), getgid()), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_ATTRIB);
}

TEST_F(VnodeTest, LinkCountChangesAreLink) {
  ScopedFd fd = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), kAllNotes), 0);
  ASSERT_EQ(link((dir_ / "f").c_str(), (dir_ / "g").c_str()), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_LINK);
  // Removing a link while others remain: NetBSD 10 posts NOTE_LINK.
  ASSERT_EQ(unlink((dir_ / "g").c_str()), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_LINK);
}

TEST_F(VnodeTest, UnlinkOfLastLinkIsDelete) {
  ScopedFd fd = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), kAllNotes), 0);
  ASSERT_EQ(unlink((dir_ / "f").c_str()), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_DELETE);
  // The open file can still be written, and that is still reported.
  PWrite(fd.get(), "x", 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_WRITE | NOTE_EXTEND);
}

TEST_F(VnodeTest, RenameOverTheFileIsDelete) {
  ScopedFd fd = OpenFile(dir_ / "victim");
  Touch(dir_ / "other");
  ASSERT_EQ(Add(fd.get(), kAllNotes), 0);
  ASSERT_EQ(rename((dir_ / "other").c_str(), (dir_ / "victim").c_str()), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_DELETE);
}

TEST_F(VnodeTest, RenameIsRenameAndTheWatchFollowsTheFile) {
  ScopedFd fd = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), kAllNotes), 0);
  ASSERT_EQ(rename((dir_ / "f").c_str(), (dir_ / "g").c_str()), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_RENAME);
  // Keyed on the inode, not the path: the old name is free, the file moved.
  Touch(dir_ / "f");
  EXPECT_TRUE(Quiet(*q_));
  PWrite(fd.get(), "after", 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_WRITE | NOTE_EXTEND);
  ASSERT_EQ(chmod((dir_ / "g").c_str(), 0600), 0);
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_ATTRIB);
}

// NetBSD's t_vnode open_write_read_close, step by step.
TEST_F(VnodeTest, OpenWriteReadCloseAsNetBSD10) {
  const std::string path = dir_ / "testfile";
  ScopedFd watched = OpenFile(path, O_RDWR | O_CREAT | O_TRUNC);
  ASSERT_EQ(Add(watched.get(), NOTE_OPEN | NOTE_READ | NOTE_WRITE | NOTE_CLOSE | NOTE_CLOSE_WRITE),
            0);
  const int w = watched.get();

  ScopedFd fd = OpenFile(path, O_RDWR);
  EXPECT_EQ(Notes(*q_, w), NOTE_OPEN);
  PWrite(fd.get(), "testfile", 0);
  EXPECT_EQ(Notes(*q_, w), NOTE_WRITE | NOTE_EXTEND);
  PWrite(fd.get(), "testfile", 0);
  EXPECT_EQ(Notes(*q_, w), NOTE_WRITE);
  PWrite(fd.get(), "!", 8);
  EXPECT_EQ(Notes(*q_, w), NOTE_WRITE | NOTE_EXTEND);
  fd.reset();
  EXPECT_EQ(Notes(*q_, w), NOTE_CLOSE_WRITE);

  fd = OpenFile(path, O_RDONLY);
  EXPECT_EQ(Notes(*q_, w), NOTE_OPEN);
  char buf[9];
  ASSERT_EQ(read(fd.get(), buf, sizeof buf), 9);
  EXPECT_EQ(Notes(*q_, w), NOTE_READ);
  fd.reset();
  EXPECT_EQ(Notes(*q_, w), NOTE_CLOSE);
  EXPECT_TRUE(Quiet(*q_));
}

// NetBSD's t_vnode "interest": three knotes on dups of one file; the
// NOTE_WRITE one goes with its fd, the others must not see the write.
TEST_F(VnodeTest, InterestOfTheRemainingKnotesOnly) {
  const std::string path = dir_ / "testfile";
  ScopedFd open_ev = OpenFile(path, O_RDWR | O_CREAT | O_TRUNC);
  ScopedFd write_ev(dup(open_ev.get()));
  ScopedFd close_ev(dup(open_ev.get()));
  ASSERT_EQ(Add(open_ev.get(), NOTE_OPEN), 0);
  ASSERT_EQ(Add(write_ev.get(), NOTE_WRITE), 0);
  ASSERT_EQ(Add(close_ev.get(), NOTE_CLOSE | NOTE_CLOSE_WRITE), 0);
  write_ev.reset();

  // The new open must not land on write_ev's number: an open of the same
  // inode with the same access mode there cannot be told from the old one
  // (fd_readiness.h's FileIdentity), so the knote would live on.
  ScopedFd first = OpenFile(path, O_RDWR);
  ScopedFd fd(fcntl(first.get(), F_DUPFD_CLOEXEC, 200));
  first.reset();  // a dup of the same open file: not a close of it
  auto ev = Gather(*q_, open_ev.get());
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, NOTE_OPEN);
  PWrite(fd.get(), "testfile", 0);
  EXPECT_TRUE(Quiet(*q_, 300));
  fd.reset();
  ev = Gather(*q_, close_ev.get());
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, NOTE_CLOSE_WRITE);
}

TEST_F(VnodeTest, NothingAskedNothingReported) {
  ScopedFd fd = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), 0), 0);
  PWrite(fd.get(), "abc", 0);
  ASSERT_EQ(fchmod(fd.get(), 0600), 0);
  ASSERT_EQ(rename((dir_ / "f").c_str(), (dir_ / "g").c_str()), 0);
  EXPECT_TRUE(Quiet(*q_, 300));
}

// ---- NetBSD's scan semantics ---------------------------------------------------

TEST_F(VnodeTest, WithoutClearTheEventRepeatsAndAccumulates) {
  // VNODE does not imply EV_CLEAR: as in the seed's kqueue_scan, a
  // retrieved knote goes back on the queue with its fflags.
  ScopedFd fd = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), kAllNotes, 0), 0);
  PWrite(fd.get(), "abc", 0);
  auto ev = Gather(*q_, fd.get());
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, NOTE_WRITE | NOTE_EXTEND);
  EXPECT_EQ(ev->flags & EV_CLEAR, 0u);
  auto again = q_->Collect(8, 0);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].fflags, NOTE_WRITE | NOTE_EXTEND);
  ASSERT_EQ(fchmod(fd.get(), 0600), 0);
  // Always active now, so each collection returns at once: poll until the
  // chmod has been seen.
  uint32_t fflags = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!(fflags & NOTE_ATTRIB) && std::chrono::steady_clock::now() < deadline) {
    auto evs = q_->Collect(8, 0);
    ASSERT_EQ(evs.size(), 1u);
    fflags = evs[0].fflags;
  }
  EXPECT_EQ(fflags, NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB);
}

TEST_F(VnodeTest, OneshotAndDispatchReportOnce) {
  ScopedFd a = OpenFile(dir_ / "a");
  ScopedFd b = OpenFile(dir_ / "b");
  ASSERT_EQ(Add(a.get(), NOTE_WRITE, EV_ONESHOT), 0);
  ASSERT_EQ(Add(b.get(), NOTE_WRITE, EV_DISPATCH), 0);
  PWrite(a.get(), "x", 0);
  EXPECT_EQ(Notes(*q_, a.get()), NOTE_WRITE | NOTE_EXTEND);
  PWrite(b.get(), "x", 0);
  EXPECT_EQ(Notes(*q_, b.get()), NOTE_WRITE | NOTE_EXTEND);
  PWrite(a.get(), "xy", 0);
  PWrite(b.get(), "xy", 0);
  EXPECT_TRUE(Quiet(*q_));
  EXPECT_EQ(q_->Change(Ev(a.get(), EVFILT_VNODE, EV_DELETE)), ENOENT);  // oneshot: gone
  EXPECT_EQ(q_->Change(Ev(b.get(), EVFILT_VNODE, EV_DELETE)), 0);       // dispatch: kept
}

TEST_F(VnodeTest, EvAddOnAnExistingKnoteChangesTheNotes) {
  ScopedFd fd = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), NOTE_ATTRIB, EV_CLEAR, 1), 0);
  PWrite(fd.get(), "abcdef", 0);
  // Let the write be seen on its own: a write and a truncation read in one
  // batch are judged by their net effect on the size (inotify merges the
  // two IN_MODIFY).
  EXPECT_TRUE(Quiet(*q_));
  ASSERT_EQ(ftruncate(fd.get(), 2), 0);  // ATTRIB (truncate)
  EXPECT_EQ(Notes(*q_, fd.get()), NOTE_ATTRIB);
  // Now (also) writes: the inotify mask must grow to see them.
  ASSERT_EQ(Add(fd.get(), NOTE_WRITE, EV_CLEAR, 2), 0);
  PWrite(fd.get(), "abcdef", 0);
  auto ev = Gather(*q_, fd.get());
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, NOTE_WRITE | NOTE_EXTEND);
  EXPECT_EQ(ev->udata, 2u);
  ASSERT_EQ(fchmod(fd.get(), 0600), 0);  // no longer asked for
  EXPECT_TRUE(Quiet(*q_));
}

// ---- Directories (NetBSD's t_vnode dir_* cases) -----------------------------------

class VnodeDirTest : public VnodeTest {
 protected:
  void SetUp() override {
    VnodeTest::SetUp();
    foo_ = dir_ / "foo";
    ASSERT_EQ(mkdir(foo_.c_str(), 0700), 0);
    target_ = ScopedFd(open(foo_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(target_);
  }
  void Watch() { ASSERT_EQ(Add(target_.get(), kAllNotes), 0); }
  uint32_t Got() { return Notes(*q_, target_.get()); }
  std::string In(const std::string& name) { return foo_ + "/" + name; }

  std::string foo_;
  ScopedFd target_;
};

TEST_F(VnodeDirTest, CreateFileInIsWriteNotLink) {
  Watch();
  Touch(In("baz1"));
  EXPECT_EQ(Got(), NOTE_WRITE);  // the entry's own open/close are not ours
}

TEST_F(VnodeDirTest, DeleteFileInIsWriteNotLink) {
  Touch(In("baz1"));
  Watch();
  ASSERT_EQ(unlink(In("baz1").c_str()), 0);
  EXPECT_EQ(Got(), NOTE_WRITE);
}

TEST_F(VnodeDirTest, MkdirAndRmdirInAreWriteAndLink) {
  Watch();
  ASSERT_EQ(mkdir(In("bar1").c_str(), 0700), 0);
  EXPECT_EQ(Got(), NOTE_WRITE | NOTE_LINK);
  ASSERT_EQ(rmdir(In("bar1").c_str()), 0);
  EXPECT_EQ(Got(), NOTE_WRITE | NOTE_LINK);
}

TEST_F(VnodeDirTest, RenamesWithinAreWriteNotLink) {
  ASSERT_EQ(mkdir(In("bar1").c_str(), 0700), 0);
  Touch(In("baz1"));
  Watch();
  ASSERT_EQ(rename(In("bar1").c_str(), In("bar2").c_str()), 0);
  EXPECT_EQ(Got(), NOTE_WRITE);
  ASSERT_EQ(rename(In("baz1").c_str(), In("baz2").c_str()), 0);
  EXPECT_EQ(Got(), NOTE_WRITE);
}

TEST_F(VnodeDirTest, DirectoriesMovedInOrOutAreWriteAndLink) {
  ASSERT_EQ(mkdir((dir_ / "bar").c_str(), 0700), 0);
  Watch();
  ASSERT_EQ(rename((dir_ / "bar").c_str(), In("bar1").c_str()), 0);
  EXPECT_EQ(Got(), NOTE_WRITE | NOTE_LINK);
  ASSERT_EQ(rename(In("bar1").c_str(), (dir_ / "bar").c_str()), 0);
  EXPECT_EQ(Got(), NOTE_WRITE | NOTE_LINK);
}

TEST_F(VnodeDirTest, FilesMovedInOrOutAreWrite) {
  Touch(dir_ / "qux");
  Watch();
  ASSERT_EQ(rename((dir_ / "qux").c_str(), In("baz1").c_str()), 0);
  EXPECT_EQ(Got(), NOTE_WRITE);
  ASSERT_EQ(rename(In("baz1").c_str(), (dir_ / "qux").c_str()), 0);
  EXPECT_EQ(Got(), NOTE_WRITE);
}

TEST_F(VnodeDirTest, OwnOpenReadCloseRenameAttrib) {
  Watch();
  ScopedFd again(open(foo_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  EXPECT_EQ(Got(), NOTE_OPEN);
  DIR* d = fdopendir(dup(again.get()));
  ASSERT_NE(d, nullptr);
  while (readdir(d) != nullptr) {
  }
  closedir(d);  // its own fd was a dup: not the last close
  EXPECT_EQ(Got(), NOTE_READ);
  again.reset();
  EXPECT_EQ(Got(), NOTE_CLOSE);
  ASSERT_EQ(chmod(foo_.c_str(), 0750), 0);
  EXPECT_EQ(Got(), NOTE_ATTRIB);
  ASSERT_EQ(rename(foo_.c_str(), (dir_ / "foo2").c_str()), 0);
  EXPECT_EQ(Got(), NOTE_RENAME);
}

// ---- What can be watched ----------------------------------------------------------

TEST_F(VnodeTest, OnlyRegularFilesAndDirectories) {
  // Anything that is not a file or a directory is refused with NetBSD's
  // errno: EINVAL from the pipe, socket, FIFO, kqueue and eventfd kqfilters,
  // EOPNOTSUPP for devices (spec_kqfilter) and what NetBSD has no
  // counterpart for (docs/filters.md).
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ScopedFd r(p[0]), w(p[1]);
  EXPECT_EQ(Add(r.get(), NOTE_WRITE), EINVAL);
  EXPECT_EQ(Add(w.get(), NOTE_WRITE), EINVAL);
  int s[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
  ScopedFd s0(s[0]), s1(s[1]);
  EXPECT_EQ(Add(s0.get(), NOTE_WRITE), EINVAL);
  ASSERT_EQ(mkfifo((dir_ / "fifo").c_str(), 0600), 0);
  ScopedFd fifo(open((dir_ / "fifo").c_str(), O_RDWR | O_CLOEXEC));
  EXPECT_EQ(Add(fifo.get(), NOTE_WRITE), EINVAL);
  ScopedFd efd(eventfd(0, EFD_CLOEXEC));
  EXPECT_EQ(Add(efd.get(), NOTE_WRITE), EINVAL);
  ScopedFd null(open("/dev/null", O_RDWR | O_CLOEXEC));
  EXPECT_EQ(Add(null.get(), NOTE_WRITE), EOPNOTSUPP);
  ASSERT_EQ(symlink("f", (dir_ / "link").c_str()), 0);
  ScopedFd lnk(open((dir_ / "link").c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  ASSERT_TRUE(lnk);
  EXPECT_EQ(Add(lnk.get(), NOTE_WRITE), EOPNOTSUPP);
  EXPECT_EQ(Add(q_->fd(), NOTE_WRITE), EINVAL);
  EXPECT_EQ(Add(1000000, NOTE_WRITE), EBADF);
}

TEST_F(VnodeTest, OPathDescriptorsOfFilesWork) {
  Touch(dir_ / "f");
  ScopedFd path(open((dir_ / "f").c_str(), O_PATH | O_CLOEXEC));
  ASSERT_EQ(Add(path.get(), kAllNotes), 0);
  ScopedFd fd = OpenFile(dir_ / "f", O_WRONLY);
  EXPECT_EQ(Notes(*q_, path.get()), NOTE_OPEN);
  PWrite(fd.get(), "abc", 0);
  EXPECT_EQ(Notes(*q_, path.get()), NOTE_WRITE | NOTE_EXTEND);
}

// ---- Lifetime ------------------------------------------------------------------------

TEST_F(VnodeTest, ClosingTheWatchedFdDropsTheKnote) {
  ScopedFd fd = OpenFile(dir_ / "f");
  ScopedFd other = OpenFile(dir_ / "f");
  ASSERT_EQ(Add(fd.get(), kAllNotes), 0);
  const int number = fd.get();
  fd.reset();
  PWrite(other.get(), "abc", 0);
  EXPECT_TRUE(Quiet(*q_, 300));
  EXPECT_EQ(q_->Change(Ev(number, EVFILT_VNODE, EV_DELETE)), EBADF);  // the number is closed (the seed: fd_getfile)
}

TEST_F(VnodeTest, AReusedFdNumberIsAnotherFile) {
  ScopedFd fd = OpenFile(dir_ / "a");
  ASSERT_EQ(Add(fd.get(), NOTE_WRITE, EV_CLEAR, 7), 0);
  const int number = fd.get();
  fd.reset();
  ScopedFd b(open((dir_ / "b").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_EQ(b.get(), number);
  // EV_ADD names the fd: the stale knote goes, a new one watches b.
  ASSERT_EQ(Add(b.get(), NOTE_WRITE, EV_CLEAR, 8), 0);
  ScopedFd a = OpenFile(dir_ / "a");
  PWrite(a.get(), "abc", 0);
  EXPECT_TRUE(Quiet(*q_));
  PWrite(b.get(), "abc", 0);
  auto ev = Gather(*q_, number);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->udata, 8u);
}

TEST_F(VnodeTest, TwoKnotesOnOneFileShareTheWatch) {
  ScopedFd a = OpenFile(dir_ / "f");
  ScopedFd b(dup(a.get()));
  ASSERT_EQ(Add(a.get(), NOTE_WRITE), 0);
  ASSERT_EQ(Add(b.get(), NOTE_ATTRIB | NOTE_READ), 0);
  kqd::VnodeFilter* ops = VnodeOps(rt_);
  ASSERT_NE(ops, nullptr);
  EXPECT_EQ(ops->watch()->watch_count(), 1u);
  PWrite(a.get(), "abc", 0);
  EXPECT_EQ(Notes(*q_, a.get()), NOTE_WRITE | NOTE_EXTEND);
  ASSERT_EQ(fchmod(a.get(), 0600), 0);
  EXPECT_EQ(Notes(*q_, b.get()), NOTE_ATTRIB);
  // Deleting one leaves the other watching.
  ASSERT_EQ(q_->Change(Ev(b.get(), EVFILT_VNODE, EV_DELETE)), 0);
  EXPECT_EQ(ops->watch()->watch_count(), 1u);
  PWrite(a.get(), "abcd", 0);
  EXPECT_EQ(Notes(*q_, a.get()), NOTE_WRITE | NOTE_EXTEND);
  ASSERT_EQ(q_->Change(Ev(a.get(), EVFILT_VNODE, EV_DELETE)), 0);
  EXPECT_EQ(ops->watch()->watch_count(), 0u);
}

std::vector<int> InotifyFds() {
  std::vector<int> fds;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec);
    if (!ec && target.string() == "anon_inode:inotify")
      fds.push_back(std::stoi(e.path().filename().string()));
  }
  return fds;
}

size_t WatchLines(int inotify_fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(inotify_fd));
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += line.rfind("inotify wd:", 0) == 0;
  return n;
}

TEST(VnodeScale, AThousandKnotesUseOneInotifyInstance) {
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_cur < 4096) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 4096);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  TempDir dir;
  TestRuntime rt;
  auto q = rt.NewQueue();
  const size_t before = InotifyFds().size();
  std::vector<ScopedFd> files;
  for (int i = 0; i < 1000; i++) {
    files.push_back(OpenFile(dir / ("f" + std::to_string(i))));
    ASSERT_TRUE(files.back()) << i;
    ASSERT_EQ(q->Change(Ev(files.back().get(), EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_WRITE)), 0);
  }
  // Registering cost no inotify instance (the filter's one exists with the
  // runtime), and that one instance carries the thousand watches.
  EXPECT_EQ(InotifyFds().size(), before);
  kqd::VnodeFilter* ops = VnodeOps(rt);
  ASSERT_NE(ops, nullptr);
  EXPECT_EQ(ops->watch()->watch_count(), 1000u);
  EXPECT_EQ(WatchLines(ops->watch()->inotify_fd()), 1000u);
  EXPECT_EQ(ops->mounts().namespace_count(), 1u);  // one mount table for all

  PWrite(files[500].get(), "x", 0);
  EXPECT_EQ(Notes(*q, files[500].get()), NOTE_WRITE | NOTE_EXTEND);

  for (auto& f : files)
    ASSERT_EQ(q->Change(Ev(f.get(), EVFILT_VNODE, EV_DELETE)), 0);
  EXPECT_EQ(ops->watch()->watch_count(), 0u);
  EXPECT_EQ(WatchLines(ops->watch()->inotify_fd()), 0u);
  EXPECT_EQ(ops->mounts().namespace_count(), 0u);
}

// ---- Revocation ---------------------------------------------------------------------

TEST_F(VnodeTest, LazyUnmountRevokes) {
  const std::string mnt = dir_ / "mnt";
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  if (mount("kqtest", mnt.c_str(), "tmpfs", 0, "size=64k") != 0) {
    GTEST_SKIP() << "cannot mount tmpfs here: " << strerror(errno);
  }
  ScopedFd fd = OpenFile(mnt + "/file");
  ASSERT_TRUE(fd);
  ASSERT_EQ(Add(fd.get(), NOTE_REVOKE | NOTE_WRITE, EV_CLEAR, 42), 0);
  // A mount elsewhere is not a revocation.
  const std::string mnt2 = dir_ / "mnt2";
  ASSERT_EQ(mkdir(mnt2.c_str(), 0755), 0);
  ASSERT_EQ(mount("kqtest2", mnt2.c_str(), "tmpfs", 0, "size=64k"), 0);
  ASSERT_EQ(umount2(mnt2.c_str(), 0), 0);
  EXPECT_TRUE(Quiet(*q_, 300));

  ASSERT_EQ(umount2(mnt.c_str(), MNT_DETACH), 0);  // the fd stays open
  auto ev = Gather(*q_, fd.get());
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, NOTE_REVOKE);
  EXPECT_EQ(ev->flags & (EV_EOF | EV_ONESHOT), EV_EOF | EV_ONESHOT);
  EXPECT_EQ(ev->udata, 42u);
  // Reported once, then gone.
  EXPECT_TRUE(Quiet(*q_));
  EXPECT_EQ(q_->Change(Ev(fd.get(), EVFILT_VNODE, EV_DELETE)), ENOENT);
}

TEST_F(VnodeTest, RevokeFiresEvenIfNotAskedFor) {
  const std::string mnt = dir_ / "mnt";
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  if (mount("kqtest", mnt.c_str(), "tmpfs", 0, "size=64k") != 0) {
    GTEST_SKIP() << "cannot mount tmpfs here: " << strerror(errno);
  }
  ScopedFd fd = OpenFile(mnt + "/file");
  ASSERT_EQ(Add(fd.get(), NOTE_WRITE), 0);
  ASSERT_EQ(umount2(mnt.c_str(), MNT_DETACH), 0);
  auto ev = Gather(*q_, fd.get());
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, 0u);  // NOTE_REVOKE was not asked for
  EXPECT_NE(ev->flags & EV_EOF, 0u);
}

// ---- The mapping itself --------------------------------------------------------------

TEST(VnodeHints, LostEventsAreRecoveredFromTheStatDeltas) {
  VnodeStat before, now;
  before.size = 10;
  before.nlink = 1;
  now = before;
  now.size = 20;
  now.nlink = 2;
  auto hints = kqd::VnodeHints(InotifyMux::kOverflow, false, &before, &now);
  uint32_t all = 0;
  for (uint32_t h : hints) all |= h;
  EXPECT_EQ(all, NOTE_WRITE | NOTE_EXTEND | NOTE_LINK);
  // Without a look at the file, a modification is still a write.
  hints = kqd::VnodeHints(InotifyMux::kModify, false, nullptr, nullptr);
  ASSERT_EQ(hints.size(), 1u);
  EXPECT_EQ(hints[0], NOTE_WRITE);
}

}  // namespace
