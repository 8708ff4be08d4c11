// daemon/os's process helpers against this very process and a child.
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "daemon/os/pidfd.h"
#include "daemon/os/proc_files.h"
#include "gtest/gtest.h"

namespace kqd {
namespace {

TEST(ProcFiles, StatusOfThisProcess) {
  ProcStatus s;
  ASSERT_TRUE(ReadProcStatus(getpid(), &s));
  EXPECT_EQ(s.tgid, getpid());
  EXPECT_EQ(s.ruid, getuid());
  EXPECT_EQ(s.euid, geteuid());
  // Root here: CAP_KILL (5) is effective; otherwise it is not.
  EXPECT_EQ((s.cap_eff >> 5) & 1, geteuid() == 0 ? 1u : 0u);
}

TEST(ProcFiles, StatusOfAThreadNamesItsGroup) {
  pid_t tid = 0;
  ProcStatus s;
  bool read = false;
  std::thread t([&] {
    tid = static_cast<pid_t>(syscall(SYS_gettid));
    read = ReadProcStatus(tid, &s);
  });
  t.join();
  ASSERT_TRUE(read);
  EXPECT_NE(tid, getpid());
  EXPECT_EQ(s.tgid, getpid());
}

TEST(ProcFiles, StatusOfNoProcess) {
  ProcStatus s;
  EXPECT_FALSE(ReadProcStatus(0x3fffffff, &s));
}

TEST(ProcFiles, StatAndThreads) {
  ProcStat st;
  ASSERT_TRUE(ReadProcStat(getpid(), &st));
  EXPECT_EQ(st.ppid, getppid());
  EXPECT_NE(st.starttime, 0u);
  EXPECT_TRUE(ReadProcStat(getpid(), &st) && st.state == 'R');
  EXPECT_TRUE(ListThreads(getpid()).count(getpid()));
  EXPECT_TRUE(ListThreads(0x3fffffff).empty());
}

TEST(Pidfd, FollowsAChildThroughExitAndReaping) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  ScopedFd pidfd = OpenPidfd(child);
  ASSERT_TRUE(pidfd.valid());
  EXPECT_TRUE(ListChildren(getpid()).size() >= 1);
  EXPECT_TRUE(PidfdHoldsPid(pidfd.get()));
  EXPECT_FALSE(PidfdExited(pidfd.get()));
  kill(child, SIGKILL);
  for (int i = 0; i < 500 && !PidfdExited(pidfd.get()); i++) usleep(10000);
  EXPECT_TRUE(PidfdExited(pidfd.get()));
  EXPECT_TRUE(PidfdHoldsPid(pidfd.get()));  // a zombie holds its pid
  ProcStat st;
  EXPECT_TRUE(ReadProcStat(child, &st) && st.state == 'Z');
  ASSERT_EQ(waitpid(child, nullptr, 0), child);
  EXPECT_FALSE(PidfdHoldsPid(pidfd.get()));  // reaped: the pid is free
}

TEST(Pidfd, RefusesANonLeaderThread) {
  pid_t tid = 0;
  std::thread t([&] { tid = static_cast<pid_t>(syscall(SYS_gettid)); });
  t.join();
  // The thread is gone by now; either way no process pidfd results.
  EXPECT_FALSE(OpenPidfd(tid).valid());
}

}  // namespace
}  // namespace kqd
