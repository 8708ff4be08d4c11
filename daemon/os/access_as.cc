#include "daemon/os/access_as.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>

#include "daemon/os/proc_files.h"

namespace kqd {
namespace {

constexpr int kCapDacOverride = 1;
constexpr int kCapDacReadSearch = 2;

bool SameUserNamespaceAsOurs(pid_t tid) {
  struct stat theirs, ours;
  std::string path = "/proc/" + std::to_string(tid) + "/ns/user";
  return stat(path.c_str(), &theirs) == 0 && stat("/proc/self/ns/user", &ours) == 0 &&
         theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev;
}

[[noreturn]] void CannotRestore(const char* what) {
  fprintf(stderr, "kqueued: cannot take back the daemon's own %s: aborting\n", what);
  abort();
}

}  // namespace

int ReadFileCredentials(pid_t tid, FileCredentials* out) {
  ProcFsCredentials proc;
  if (!ReadProcFsCredentials(tid, &proc)) return ESRCH;
  out->fsuid = proc.fsuid;
  out->fsgid = proc.fsgid;
  out->groups = std::move(proc.groups);
  const bool dac = proc.cap_eff & ((1ull << kCapDacOverride) | (1ull << kCapDacReadSearch));
  out->may_bypass_read_checks = dac && SameUserNamespaceAsOurs(tid);
  return 0;
}

int AccessAs(const FileCredentials& creds, int fd, int mode) {
  if (creds.may_bypass_read_checks && (mode & ~R_OK) == 0) return 0;
  // Ours, to take back. setfsuid/setfsgid return the previous value.
  const uid_t my_fsuid = static_cast<uid_t>(syscall(SYS_setfsuid, -1));
  const gid_t my_fsgid = static_cast<gid_t>(syscall(SYS_setfsgid, -1));
  int ngroups = getgroups(0, nullptr);
  std::vector<gid_t> my_groups(ngroups > 0 ? ngroups : 0);
  if (ngroups > 0 && getgroups(ngroups, my_groups.data()) != ngroups) return EAGAIN;

  if (syscall(SYS_setgroups, creds.groups.size(), creds.groups.data()) != 0) return errno;
  syscall(SYS_setfsgid, creds.fsgid);
  syscall(SYS_setfsuid, creds.fsuid);
  // AT_EACCESS: checked with the fs ids just set (and, once fsuid is not 0,
  // without the daemon's DAC capabilities, which the kernel drops then).
  int err = 0;
  if (syscall(SYS_faccessat2, fd, "", mode, AT_EMPTY_PATH | AT_EACCESS) != 0) err = errno;

  syscall(SYS_setfsuid, my_fsuid);
  syscall(SYS_setfsgid, my_fsgid);
  if (static_cast<uid_t>(syscall(SYS_setfsuid, -1)) != my_fsuid) CannotRestore("fsuid");
  if (static_cast<gid_t>(syscall(SYS_setfsgid, -1)) != my_fsgid) CannotRestore("fsgid");
  if (syscall(SYS_setgroups, my_groups.size(), my_groups.data()) != 0) CannotRestore("groups");
  return err;
}

}  // namespace kqd
