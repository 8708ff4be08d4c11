#include "daemon/util/access_as.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sstream>
#include <string>

#include "daemon/util/read_file.h"

namespace kqd {
namespace {

constexpr int kCapDacOverride = 1;
constexpr int kCapDacReadSearch = 2;

// The fields after `key` on its line of a /proc status file.
std::istringstream Fields(const std::string& status, const char* key) {
  size_t at = status.find(std::string("\n") + key);
  if (at == std::string::npos) return std::istringstream();
  at += 1 + std::string(key).size();
  size_t end = status.find('\n', at);
  return std::istringstream(status.substr(at, end == std::string::npos ? end : end - at));
}

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
  std::string status;
  if (ReadWholeFile("/proc/" + std::to_string(tid) + "/status", &status) != 0) return ESRCH;
  status.insert(0, "\n");
  uid_t uid[4];
  gid_t gid[4];
  std::istringstream u = Fields(status, "Uid:");
  std::istringstream g = Fields(status, "Gid:");
  // Real, effective, saved, filesystem.
  if (!(u >> uid[0] >> uid[1] >> uid[2] >> uid[3])) return ESRCH;
  if (!(g >> gid[0] >> gid[1] >> gid[2] >> gid[3])) return ESRCH;
  out->fsuid = uid[3];
  out->fsgid = gid[3];
  out->groups.clear();
  std::istringstream groups = Fields(status, "Groups:");
  gid_t one;
  while (groups >> one) out->groups.push_back(one);
  std::istringstream cap = Fields(status, "CapEff:");
  std::string hex;
  cap >> hex;
  const uint64_t capeff = std::strtoull(hex.c_str(), nullptr, 16);
  const bool dac = capeff & ((1ull << kCapDacOverride) | (1ull << kCapDacReadSearch));
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
