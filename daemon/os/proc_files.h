// Readers of /proc/<pid>/...: what the daemon learns about a process or a
// thread from procfs. Small and allocation-light: they run under filter
// locks and on the event loop. Every /proc parser of the daemon is here.
#ifndef KQUEUED_DAEMON_OS_PROC_FILES_H_
#define KQUEUED_DAEMON_OS_PROC_FILES_H_

#include <sys/types.h>

#include <cstdint>
#include <set>
#include <vector>

namespace kqd {

// /proc/<tid>/status (any thread id works, leader or not): the thread
// group, the Uid: and Gid: lines (real, effective, saved set-ID) and CapEff.
struct ProcStatus {
  pid_t tgid = 0;
  uid_t ruid = 0;
  uid_t euid = 0;
  uid_t suid = 0;
  gid_t rgid = 0;
  gid_t egid = 0;
  gid_t sgid = 0;
  uint64_t cap_eff = 0;  // effective capabilities, bit n = capability n
};
// False if the thread is gone (or the file lacks Tgid: or Uid:).
bool ReadProcStatus(pid_t tid, ProcStatus* out);

// /proc/<tid>/status again, for file permission checks made as the thread
// (see access_as.h): the filesystem ids (4th field of Uid:/Gid:), the
// supplementary groups and CapEff.
struct ProcFsCredentials {
  uid_t fsuid = 0;
  gid_t fsgid = 0;
  std::vector<gid_t> groups;
  uint64_t cap_eff = 0;
};
// False if the thread is gone (or the file lacks Uid: or Gid:).
bool ReadProcFsCredentials(pid_t tid, ProcFsCredentials* out);

// /proc/<pid>/stat: state (field 3), ppid (4), starttime (22, clock ticks
// since boot: with the pid it names one process for good) and exit_code (52,
// the wait(2)-style status, meaningful while the process is a zombie; the
// kernel shows it only to readers that may ptrace the process, as root may).
struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  uint64_t starttime = 0;
  int exit_code = 0;
};
bool ReadProcStat(pid_t pid, ProcStat* out);

// The children of every thread of `pid` (/proc/<pid>/task/*/children),
// zombies included. Empty if the process is gone.
std::vector<pid_t> ListChildren(pid_t pid);

// The thread ids of process `tgid` (/proc/<tgid>/task); empty if it is gone.
std::set<pid_t> ListThreads(pid_t tgid);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_PROC_FILES_H_
