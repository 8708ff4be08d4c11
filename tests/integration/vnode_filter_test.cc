// EVFILT_VNODE and EVFILT_FS through a real daemon, raw ioctls: another
// process changes a file the client watches by fd; the daemon holds no
// descriptor of the file and no watch on it once it is gone; unmounting
// revokes; mounts in the client's own mount namespace are reported.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/private_mounts.h"
#include "tests/support/raw_kevent.h"

namespace kqd {
namespace testing {
namespace {


// One event within `ms`, its fflags OR-ed with what follows within 100 ms.
std::optional<kq_kevent> Wait(int kq, long ms = 3000) {
  kq_kevent ev{};
  if (Kevent(kq, nullptr, 0, &ev, 1, ms) != 1) return std::nullopt;
  kq_kevent more{};
  while (Kevent(kq, nullptr, 0, &more, 1, 100) == 1) ev.fflags |= more.fflags;
  return ev;
}

// Runs `step` in a child process and waits for it (a separate writer).
void InChild(const std::function<void()>& step) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    step();
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

std::string Link(const std::string& path) {
  std::error_code ec;
  auto t = std::filesystem::read_symlink(path, ec);
  return ec ? std::string() : t.string();
}

// The daemon's descriptors that lead to `path` (or its deleted inode).
std::vector<std::string> DaemonFdsTo(const std::string& path) {
  std::vector<std::string> out;
  const std::string dir = "/proc/" + std::to_string(SharedDaemon().pid()) + "/fd";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string target = Link(e.path().string());
    if (target.rfind(path, 0) == 0) out.push_back(target);
  }
  return out;
}

// Whether any inotify instance of the daemon watches inode `ino`.
bool DaemonWatchesInode(ino_t ino) {
  const std::string pid = std::to_string(SharedDaemon().pid());
  char hex[32];
  snprintf(hex, sizeof hex, "ino:%lx ", static_cast<unsigned long>(ino));
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + pid + "/fd", ec)) {
    if (Link(e.path().string()) != "anon_inode:inotify") continue;
    std::ifstream in("/proc/" + pid + "/fdinfo/" + e.path().filename().string());
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("inotify wd:", 0) == 0 && line.find(hex) != std::string::npos) return true;
    }
  }
  return false;
}

class VnodeDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    kq_ = SharedDaemon().OpenKqueue();
    ASSERT_GE(kq_, 0) << strerror(errno);
    char tmpl[] = "/tmp/kqvnode.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (kq_ >= 0) close(kq_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  int kq_ = -1;
  std::string dir_;
};

TEST_F(VnodeDevice, AnotherProcessWritesRenamesDeletes) {
  const std::string path = dir_ + "/watched";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  const uint32_t notes = NOTE_WRITE | NOTE_EXTEND | NOTE_RENAME | NOTE_DELETE | NOTE_ATTRIB;
  ASSERT_EQ(Change(kq_, Ev(fd, EVFILT_VNODE, EV_ADD | EV_CLEAR, notes, 0, 0x1234)), 0);

  InChild([&] {
    int w = open(path.c_str(), O_WRONLY | O_APPEND);
    if (w < 0 || write(w, "data", 4) != 4) _exit(1);
    close(w);
  });
  auto ev = Wait(kq_);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->ident, static_cast<uint64_t>(fd));
  EXPECT_EQ(ev->filter, EVFILT_VNODE);
  EXPECT_EQ(ev->fflags, NOTE_WRITE | NOTE_EXTEND);
  EXPECT_EQ(ev->udata, 0x1234u);

  const std::string moved = dir_ + "/moved";
  InChild([&] {
    if (rename(path.c_str(), moved.c_str()) != 0) _exit(1);
  });
  ev = Wait(kq_);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, NOTE_RENAME);

  InChild([&] {
    if (unlink(moved.c_str()) != 0) _exit(1);
  });
  ev = Wait(kq_);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->fflags, NOTE_DELETE);
  close(fd);
}

TEST_F(VnodeDevice, TheDaemonKeepsNothingOfTheFile) {
  const std::string path = dir_ + "/kept";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  ASSERT_EQ(Change(kq_, Ev(fd, EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_WRITE)), 0);
  EXPECT_TRUE(DaemonFdsTo(dir_).empty());
  EXPECT_TRUE(DaemonWatchesInode(st.st_ino));  // by inode, through inotify

  ASSERT_EQ(write(fd, "x", 1), 1);
  auto ev = Wait(kq_);
  ASSERT_TRUE(ev);
  EXPECT_TRUE(DaemonFdsTo(dir_).empty());

  // The client lets go of the file: once the last name is gone too, the
  // inode dies (IN_IGNORED) and the daemon has no watch left on it.
  close(fd);
  ASSERT_EQ(unlink(path.c_str()), 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (DaemonWatchesInode(st.st_ino) && std::chrono::steady_clock::now() < deadline) {
    usleep(10000);
  }
  EXPECT_FALSE(DaemonWatchesInode(st.st_ino));
  EXPECT_TRUE(DaemonFdsTo(dir_).empty());
  // And the knote went with the fd, silently.
  kq_kevent out{};
  EXPECT_EQ(Kevent(kq_, nullptr, 0, &out, 1, 200), 0);
}

TEST_F(VnodeDevice, PipesAndSocketsAreNotVnodes) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  // Not a file or a directory: EINVAL, as NetBSD's pipe and socket
  // kqfilters answer.
  EXPECT_EQ(Change(kq_, Ev(p[0], EVFILT_VNODE, EV_ADD, NOTE_WRITE)), EINVAL);
  int s[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, s), 0);
  EXPECT_EQ(Change(kq_, Ev(s[0], EVFILT_VNODE, EV_ADD, NOTE_WRITE)), EINVAL);
  close(s[0]);
  close(s[1]);
  close(p[0]);
  close(p[1]);
  EXPECT_EQ(Change(kq_, Ev(987654, EVFILT_VNODE, EV_ADD, NOTE_WRITE)), EBADF);
}

// issue 12 item 6: an O_PATH descriptor can be opened on a file its opener
// may not read; EVFILT_VNODE through it would report the owner's activity,
// which inotify refuses the user. The daemon checks read permission as the
// caller (its fs uid, gid and groups): EACCES.
TEST_F(VnodeDevice, OPathNeedsReadPermissionAsTheCaller) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  const std::string secret = dir_ + "/secret", open_file = dir_ + "/public",
                    group_file = dir_ + "/group";
  for (const auto& [path, mode] : {std::pair{secret, 0600}, std::pair{open_file, 0644},
                                   std::pair{group_file, 0640}}) {
    int fd = open(path.c_str(), O_CREAT | O_WRONLY, mode);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fchmod(fd, mode), 0);
    close(fd);
  }
  ASSERT_EQ(chown(group_file.c_str(), 0, 65534), 0);
  const std::string device = SharedDaemon().device();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The unprivileged attacker of the review: uid and gid 65534.
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(100);
    int kq = open(device.c_str(), O_RDWR);
    if (kq < 0) _exit(101);
    int s = open(secret.c_str(), O_PATH);
    int p = open(open_file.c_str(), O_PATH);
    int g = open(group_file.c_str(), O_PATH);
    if (s < 0 || p < 0 || g < 0) _exit(102);
    if (Change(kq, Ev(s, EVFILT_VNODE, EV_ADD, NOTE_WRITE | NOTE_ATTRIB)) != EACCES)
      _exit(103);
    if (Change(kq, Ev(p, EVFILT_VNODE, EV_ADD, NOTE_WRITE)) != 0) _exit(104);
    if (Change(kq, Ev(g, EVFILT_VNODE, EV_ADD, NOTE_WRITE)) != 0) _exit(105);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "step " << WEXITSTATUS(status) - 100
                                    << " (3: secret accepted, 4/5: readable refused)";
  // The daemon's own credentials are intact: root still watches the secret.
  int s = open(secret.c_str(), O_PATH);
  ASSERT_GE(s, 0);
  EXPECT_EQ(Change(kq_, Ev(s, EVFILT_VNODE, EV_ADD, NOTE_WRITE)), 0);
  close(s);
}

// The child's exit status: passed, failed (its line comes through a pipe),
// or skipped (no private mount namespace) — never confused with each other.
constexpr int kChildPassed = 0;
constexpr int kChildFailed = 1;
constexpr int kChildSkipped = 2;

// In a child with a mount namespace of its own (nothing leaks to the host):
// `body` returns 0 on success or the line of the check that failed.
void InOwnMountNamespace(const std::function<int()>& body) {
  int lines[2];
  ASSERT_EQ(pipe2(lines, O_CLOEXEC), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(lines[0]);
    if (unshare(CLONE_NEWNS) != 0) _exit(kChildSkipped);
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(kChildSkipped);
    const int line = body();
    if (line == 0) _exit(kChildPassed);
    if (write(lines[1], &line, sizeof line) != sizeof line) _exit(kChildFailed);
    _exit(kChildFailed);
  }
  close(lines[1]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  int line = 0;
  if (read(lines[0], &line, sizeof line) != sizeof line) line = 0;
  close(lines[0]);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  if (WEXITSTATUS(status) == kChildSkipped) GTEST_SKIP() << "no private mount namespace here";
  EXPECT_EQ(WEXITSTATUS(status), kChildPassed) << "failed at line " << line;
}

#define CHECK_OR_LINE(cond) \
  if (!(cond)) return __LINE__

TEST_F(VnodeDevice, LazyUnmountRevokesAndFsReportsMounts) {
  const std::string mnt = dir_ + "/mnt";
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  InOwnMountNamespace([&]() -> int {
    // The daemon reads this process's mount table, not its own.
    int kq = SharedDaemon().OpenKqueue();
    CHECK_OR_LINE(kq >= 0);
    // The queue is open: now nothing but our own mounts may change the
    // table (private_mounts.h; another test's daemon stopping would).
    CHECK_OR_LINE(DetachFuseMounts() >= 0);
    CHECK_OR_LINE(Change(kq, Ev(0, EVFILT_FS, EV_ADD)) == 0);
    CHECK_OR_LINE(mount("kqvnode", mnt.c_str(), "tmpfs", 0, "size=64k") == 0);
    auto ev = Wait(kq);
    CHECK_OR_LINE(ev && ev->filter == EVFILT_FS && ev->fflags == 0x1 /* VQ_MOUNT */);
    CHECK_OR_LINE(ev->flags & EV_CLEAR);

    int fd = open((mnt + "/f").c_str(), O_RDWR | O_CREAT, 0644);
    CHECK_OR_LINE(fd >= 0);
    CHECK_OR_LINE(Change(kq, Ev(fd, EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_REVOKE)) == 0);
    CHECK_OR_LINE(umount2(mnt.c_str(), MNT_DETACH) == 0);
    bool revoked = false, unmounted = false;
    for (int i = 0; i < 4 && !(revoked && unmounted); i++) {
      kq_kevent out{};
      if (Kevent(kq, nullptr, 0, &out, 1, 3000) != 1) break;
      if (out.filter == EVFILT_VNODE) {
        revoked = out.fflags == NOTE_REVOKE && (out.flags & EV_EOF);
      } else if (out.filter == EVFILT_FS) {
        unmounted = (out.fflags & 0x2) != 0;  // VQ_UNMOUNT
      }
    }
    CHECK_OR_LINE(revoked);
    CHECK_OR_LINE(unmounted);
    close(fd);
    close(kq);
    return 0;
  });
}

}  // namespace
}  // namespace testing
}  // namespace kqd
