#include "daemon/filters/proc/proc_info.h"

#include "daemon/util/read_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace kqd {
namespace {

// Parses a decimal pid list separated by blanks ("12 34 "), appending.
void ParsePids(const std::string& text, std::vector<pid_t>* out) {
  const char* p = text.c_str();
  for (;;) {
    char* end;
    long v = std::strtol(p, &end, 10);
    if (end == p) return;
    if (v > 0) out->push_back(static_cast<pid_t>(v));
    p = end;
  }
}

}  // namespace

bool ReadProcCreds(pid_t pid, ProcCreds* out) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", pid);
  std::string text;
  if (ReadWholeFile(path, &text) != 0) return false;
  bool have_tgid = false, have_uid = false, have_gid = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const char* line = text.c_str() + pos;
    unsigned long a, b, c;
    if (std::strncmp(line, "Tgid:", 5) == 0) {
      out->tgid = static_cast<pid_t>(std::strtol(line + 5, nullptr, 10));
      have_tgid = true;
    } else if (std::strncmp(line, "Uid:", 4) == 0 &&
               std::sscanf(line + 4, "%lu %lu %lu", &a, &b, &c) == 3) {
      out->ruid = static_cast<uid_t>(a);
      out->euid = static_cast<uid_t>(b);
      out->suid = static_cast<uid_t>(c);
      have_uid = true;
    } else if (std::strncmp(line, "Gid:", 4) == 0 &&
               std::sscanf(line + 4, "%lu %lu %lu", &a, &b, &c) == 3) {
      out->rgid = static_cast<gid_t>(a);
      out->egid = static_cast<gid_t>(b);
      out->sgid = static_cast<gid_t>(c);
      have_gid = true;
    }
    pos = eol + 1;
  }
  return have_tgid && have_uid && have_gid;
}

bool IsSetId(const ProcCreds& c) {
  return c.euid != c.ruid || c.suid != c.ruid || c.egid != c.rgid || c.sgid != c.rgid;
}

bool MayTrack(const ProcCreds& forker, const ProcCreds& child) {
  if (forker.euid == 0) return true;
  return forker.ruid == child.ruid && !IsSetId(child);
}

bool ReadProcStat(pid_t pid, ProcStat* out) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  std::string text;
  if (ReadWholeFile(path, &text) != 0) return false;
  // The command name (field 2) is in parentheses and may itself contain
  // spaces and ')': the fields resume after the last ')'.
  size_t close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::vector<std::string> fields;  // fields[0] is field 3 (state)
  size_t pos = close + 1;
  while (pos < text.size()) {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\n')) pos++;
    size_t end = pos;
    while (end < text.size() && text[end] != ' ' && text[end] != '\n') end++;
    if (end > pos) fields.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  auto field = [&](int number) -> const std::string* {
    size_t i = static_cast<size_t>(number - 3);
    return i < fields.size() ? &fields[i] : nullptr;
  };
  if (!field(22)) return false;
  out->state = (*field(3))[0];
  out->ppid = static_cast<pid_t>(std::strtol(field(4)->c_str(), nullptr, 10));
  out->starttime = std::strtoull(field(22)->c_str(), nullptr, 10);
  // Field 52 exists since Linux 3.5.
  out->exit_code = field(52) ? static_cast<int>(std::strtol(field(52)->c_str(), nullptr, 10)) : 0;
  return true;
}

std::vector<pid_t> ListChildren(pid_t pid) {
  std::vector<pid_t> children;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR* dir = opendir(path);
  if (!dir) return children;
  std::string text;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string file = std::string(path) + "/" + e->d_name + "/children";
    if (ReadWholeFile(file, &text) == 0) ParsePids(text, &children);
  }
  closedir(dir);
  return children;
}

bool MaySignal(const ProcessContext& watcher, const ProcCreds& target) {
  if (watcher.can_kill_any()) return true;
  for (uid_t who : {watcher.ruid(), watcher.euid()}) {
    if (who == target.ruid || who == target.suid) return true;
  }
  return false;
}

ScopedFd OpenPidfd(pid_t pid) {
  // pidfds are always close-on-exec; flags 0 asks for a process (not a
  // thread) pidfd, so a non-leader thread id is refused with EINVAL.
  return ScopedFd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
}

bool PidfdHoldsPid(int pidfd) {
  if (syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0) return true;
  // EPERM: it exists, we just may not signal it (a daemon without root).
  return errno == EPERM;
}

bool PidfdExited(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

namespace {

// PIDFD_GET_INFO (Linux 6.13; the exit status since 6.15), declared here
// because the build's kernel headers may predate it. Only the first version
// of the structure (64 bytes) is used: the kernel takes the size from the
// command and fills what fits.
struct PidfdInfoV0 {
  uint64_t mask;
  uint64_t cgroupid;
  uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
  int32_t exit_code;
};
static_assert(sizeof(PidfdInfoV0) == 64, "PIDFD_INFO_SIZE_VER0");
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, PidfdInfoV0);
constexpr uint64_t kPidfdInfoExit = 1u << 3;

}  // namespace

bool PidfdExitStatus(int pidfd, int* status) {
  PidfdInfoV0 info{};
  info.mask = kPidfdInfoExit;
  if (ioctl(pidfd, kPidfdGetInfo, &info) != 0) return false;  // ENOTTY: before 6.13
  if (!(info.mask & kPidfdInfoExit)) return false;  // not reaped yet, or before 6.15
  *status = info.exit_code;
  return true;
}

}  // namespace kqd
