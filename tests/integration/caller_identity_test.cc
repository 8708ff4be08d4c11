// Who the daemon thinks is calling, against a private daemon: credentials
// are those of the calling thread at each call (a setuid() or a capset()
// between two calls governs the second), the daemon keeps nothing for
// clients that are gone, an argument block in read-only memory is fine, and
// the device is recognised by its file wherever it is mounted.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "proto/kqueue_abi.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/raw_kevent.h"
#include "tests/support/channel.h"

namespace kqd {
namespace testing {
namespace {

constexpr uid_t kTargetUid = 54321;  // owns the watched process
constexpr uid_t kOtherUid = 54322;   // neither root nor the target

kq_kevent WatchExit(pid_t pid) {
  return Ev(static_cast<uint64_t>(pid), EVFILT_PROC, EV_ADD, NOTE_EXIT);
}

// EV_ADD of EVFILT_PROC on `pid` then EV_DELETE: 0 or the errno of the add.
int TryWatch(int kq, pid_t pid) {
  kq_kevent add = WatchExit(pid);
  if (Kevent(kq, &add, 1, nullptr, 0, 0) != 0) return errno;
  kq_kevent del = Ev(static_cast<uint64_t>(pid), EVFILT_PROC, EV_DELETE);
  if (Kevent(kq, &del, 1, nullptr, 0, 0) != 0) return 1000 + errno;
  return 0;
}

// Sets or clears CAP_KILL in the calling thread's effective set (it stays
// permitted, so it can come back).
bool SetCapKillEffective(bool on) {
  __user_cap_header_struct h{};
  h.version = _LINUX_CAPABILITY_VERSION_3;
  __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capget, &h, d) != 0) return false;
  if (on)
    d[CAP_TO_INDEX(CAP_KILL)].effective |= CAP_TO_MASK(CAP_KILL);
  else
    d[CAP_TO_INDEX(CAP_KILL)].effective &= ~CAP_TO_MASK(CAP_KILL);
  return syscall(SYS_capset, &h, d) == 0;
}

// The daemon's open descriptors.
int CountFds(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  int n = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

class CallerIdentity : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (switches users)";
    daemon_ = &SharedDaemon();
    // The watched process: another user's, parked until the test ends.
    target_ = fork();
    ASSERT_GE(target_, 0);
    if (target_ == 0) {
      if (setresgid(kTargetUid, kTargetUid, kTargetUid) != 0 ||
          setresuid(kTargetUid, kTargetUid, kTargetUid) != 0)
        _exit(2);
      for (;;) pause();
    }
    // Wait until it runs as that user.
    for (int i = 0; i < 500; i++) {
      struct stat st;
      std::string p = "/proc/" + std::to_string(target_);
      if (stat(p.c_str(), &st) == 0 && st.st_uid == kTargetUid) return;
      usleep(10000);
    }
    FAIL() << "the target never switched users";
  }
  void TearDown() override {
    if (target_ > 0) {
      kill(target_, SIGKILL);
      waitpid(target_, nullptr, 0);
    }
  }

  // Runs `body` in a forked child (root to begin with) and returns its exit
  // status (0: all good; else the step that failed).
  int InChild(const std::function<int()>& body) {
    pid_t c = fork();
    if (c == 0) _exit(body());
    int status = 0;
    waitpid(c, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
  }

  DaemonFixture* daemon_ = nullptr;
  pid_t target_ = -1;
};

TEST_F(CallerIdentity, CapKillDroppedBetweenCallsCountsOnTheNextCall) {
  const pid_t target = target_;
  int rc = InChild([this, target] {
    int kq = daemon_->OpenKqueue();
    if (kq < 0) return 1;
    if (TryWatch(kq, target) != 0) return 2;  // root with CAP_KILL: allowed
    if (!SetCapKillEffective(false)) return 3;
    if (TryWatch(kq, target) != EACCES) return 4;  // the very next call
    if (!SetCapKillEffective(true)) return 5;
    if (TryWatch(kq, target) != 0) return 6;
    if (!SetCapKillEffective(false)) return 7;
    if (TryWatch(kq, target) != EACCES) return 8;
    return 0;
  });
  EXPECT_EQ(rc, 0);
}

TEST_F(CallerIdentity, UidChangedBetweenCallsCountsOnTheNextCall) {
  const pid_t target = target_;
  int rc = InChild([this, target] {
    int kq = daemon_->OpenKqueue();
    if (kq < 0) return 1;
    // The saved uid stays 0, so each switch can be undone; while the real
    // and effective uids are not 0 the effective capabilities are empty.
    if (setresuid(kOtherUid, kOtherUid, 0) != 0) return 2;
    if (TryWatch(kq, target) != EACCES) return 3;
    // (Back through root: only the saved uid 0 opens other users.)
    if (setresuid(0, 0, 0) != 0 || setresuid(kTargetUid, kTargetUid, 0) != 0) return 4;
    if (TryWatch(kq, target) != 0) return 5;  // same user as the target
    if (setresuid(0, 0, 0) != 0 || setresuid(kOtherUid, kOtherUid, 0) != 0) return 6;
    if (TryWatch(kq, target) != EACCES) return 7;
    if (setresuid(0, 0, 0) != 0) return 8;
    if (TryWatch(kq, target) != 0) return 9;
    return 0;
  });
  EXPECT_EQ(rc, 0);
}

TEST_F(CallerIdentity, CredentialsAreTheCallingThreads) {
  // The raw system call changes one thread only (glibc's setresuid would
  // change them all): the daemon must judge each call by its own thread.
  const pid_t target = target_;
  int rc = InChild([this, target] {
    int kq = daemon_->OpenKqueue();
    if (kq < 0) return 1;
    if (TryWatch(kq, target) != 0) return 2;
    int thread_result = -1;
    std::thread t([&] {
      if (syscall(SYS_setresuid, kOtherUid, kOtherUid, 0) != 0) return;
      thread_result = TryWatch(kq, target);
    });
    t.join();
    if (thread_result != EACCES) return 3;
    if (TryWatch(kq, target) != 0) return 4;  // this thread is still root
    return 0;
  });
  EXPECT_EQ(rc, 0);
}

TEST_F(CallerIdentity, ExitedClientsLeaveNoDescriptorsInTheDaemon) {
  {
    // Warm up: this process's own entries are part of the baseline.
    int kq = daemon_->OpenKqueue();
    ASSERT_GE(kq, 0);
    kq_kevent out;
    ASSERT_EQ(Kevent(kq, nullptr, 0, &out, 1, 0), 0);
    close(kq);
  }
  const int baseline = CountFds(daemon_->pid());
  constexpr int kClients = 40;
  Channel ready;
  std::vector<pid_t> clients;
  for (int i = 0; i < kClients; i++) {
    pid_t c = fork();
    ASSERT_GE(c, 0);
    if (c == 0) {
      int kq = daemon_->OpenKqueue();
      if (kq < 0) _exit(1);
      // A few threads call too; then everyone parks in a kevent.
      std::vector<std::thread> threads;
      for (int t = 0; t < 3; t++) {
        threads.emplace_back([kq] {
          kq_kevent out;
          Kevent(kq, nullptr, 0, &out, 1, 0);
        });
      }
      for (auto& t : threads) t.join();
      ready.Send(1);
      kq_kevent out;
      Kevent(kq, nullptr, 0, &out, 1, -1);
      _exit(0);
    }
    clients.push_back(c);
  }
  for (int i = 0; i < kClients; i++) ASSERT_EQ(ready.Receive(), 1);
  usleep(50000);  // let the last ones park
  EXPECT_GE(CountFds(daemon_->pid()), baseline + kClients) << "the clients cost nothing?";
  for (pid_t c : clients) kill(c, SIGKILL);
  for (pid_t c : clients) waitpid(c, nullptr, 0);
  // Within a second, the daemon holds what it held before.
  int now = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  do {
    now = CountFds(daemon_->pid());
    if (now <= baseline) break;
    usleep(10000);
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_LE(now, baseline) << "baseline " << baseline;
}

TEST_F(CallerIdentity, ArgumentBlockInReadOnlyMemory) {
  // The daemon never writes the argument block back, so a read-only one
  // works — rather than failing with EFAULT after the event was taken.
  int kq = daemon_->OpenKqueue();
  ASSERT_GE(kq, 0);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  kq_kevent add = Ev(p[0], EVFILT_READ, EV_ADD | EV_ONESHOT);
  ASSERT_EQ(Kevent(kq, &add, 1, nullptr, 0, 0), 0);
  ASSERT_EQ(write(p[1], "x", 1), 1);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* mem = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  kq_kevent out{};
  auto* args = static_cast<kq_kevent_args*>(mem);
  args->eventlist = reinterpret_cast<uint64_t>(&out);
  args->nevents = 1;
  args->flags = KQ_KEVENT_TIMEOUT;
  args->timeout_sec = 5;  // readiness reaches the daemon asynchronously
  ASSERT_EQ(mprotect(mem, page, PROT_READ), 0);
  EXPECT_EQ(ioctl(kq, KQ_IOC_KEVENT, args), 1) << strerror(errno);
  EXPECT_EQ(out.ident, static_cast<uint64_t>(p[0]));
  munmap(mem, page);
  close(p[0]);
  close(p[1]);
  close(kq);
}

TEST_F(CallerIdentity, DeviceBoundElsewhereIsStillOurDevice) {
  // A second name for the device (a bind mount in a private mount
  // namespace): its descriptors are kqueues all the same, and READ or VNODE
  // on a kqueue nobody named (KQ_KEVENT_KQFD) is refused, never copied.
  const std::string device = daemon_->device();
  int rc = InChild([&device] {
    if (unshare(CLONE_NEWNS) != 0) return 1;
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 2;
    char dir[] = "/tmp/kq-alias-XXXXXX";
    if (!mkdtemp(dir)) return 3;
    std::string alias = std::string(dir) + "/elsewhere";
    int f = open(alias.c_str(), O_CREAT | O_WRONLY, 0600);
    if (f < 0) return 4;
    close(f);
    if (mount(device.c_str(), alias.c_str(), nullptr, MS_BIND, nullptr) != 0) return 5;
    int watcher = open(device.c_str(), O_RDWR);
    int hidden = open(alias.c_str(), O_RDWR);
    int result = 0;
    if (watcher < 0 || hidden < 0) {
      result = 6;
    } else {
      kq_kevent read_it = Ev(hidden, EVFILT_READ, EV_ADD);
      if (Kevent(watcher, &read_it, 1, nullptr, 0, 0) != -1 || errno != EOPNOTSUPP) result = 7;
      kq_kevent vnode_it = Ev(hidden, EVFILT_VNODE, EV_ADD, NOTE_WRITE);
      if (!result && (Kevent(watcher, &vnode_it, 1, nullptr, 0, 0) != -1 || errno != EOPNOTSUPP))
        result = 8;
      // And the alias still serves as a kqueue.
      kq_kevent out;
      if (!result && Kevent(hidden, nullptr, 0, &out, 1, 0) != 0) result = 9;
    }
    close(hidden);
    close(watcher);
    umount2(alias.c_str(), MNT_DETACH);
    unlink(alias.c_str());
    rmdir(dir);
    return result;
  });
  EXPECT_EQ(rc, 0);
}

}  // namespace
}  // namespace testing
}  // namespace kqd
