#include "daemon/os/proc_files.h"

#include <dirent.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "daemon/os/read_file.h"

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

struct DirCloser {
  void operator()(DIR* d) const { closedir(d); }
};
using ScopedDir = std::unique_ptr<DIR, DirCloser>;

}  // namespace

bool ReadProcStatus(pid_t tid, ProcStatus* out) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", tid);
  std::string text;
  if (ReadWholeFile(path, &text) != 0) return false;
  bool have_tgid = false, have_uid = false;
  out->cap_eff = 0;
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
    } else if (std::strncmp(line, "CapEff:", 7) == 0) {
      out->cap_eff = std::strtoull(line + 7, nullptr, 16);
    }
    pos = eol + 1;
  }
  return have_tgid && have_uid;
}

bool ReadProcFsCredentials(pid_t tid, ProcFsCredentials* out) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", tid);
  std::string text;
  if (ReadWholeFile(path, &text) != 0) return false;
  bool have_uid = false, have_gid = false;
  out->cap_eff = 0;
  out->groups.clear();
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const char* line = text.c_str() + pos;
    unsigned long a, b, c, d;
    if (std::strncmp(line, "Uid:", 4) == 0 &&
        std::sscanf(line + 4, "%lu %lu %lu %lu", &a, &b, &c, &d) == 4) {
      out->fsuid = static_cast<uid_t>(d);
      have_uid = true;
    } else if (std::strncmp(line, "Gid:", 4) == 0 &&
               std::sscanf(line + 4, "%lu %lu %lu %lu", &a, &b, &c, &d) == 4) {
      out->fsgid = static_cast<gid_t>(d);
      have_gid = true;
    } else if (std::strncmp(line, "Groups:", 7) == 0) {
      const char* p = line + 7;
      const char* end = text.c_str() + eol;
      while (p < end) {
        char* next;
        const unsigned long g = std::strtoul(p, &next, 10);
        if (next == p || next > end) break;
        out->groups.push_back(static_cast<gid_t>(g));
        p = next;
      }
    } else if (std::strncmp(line, "CapEff:", 7) == 0) {
      out->cap_eff = std::strtoull(line + 7, nullptr, 16);
    }
    pos = eol + 1;
  }
  return have_uid && have_gid;
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
  ScopedDir dir(opendir(path));
  if (!dir) return children;
  std::string text;
  while (dirent* e = readdir(dir.get())) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string file = std::string(path) + "/" + e->d_name + "/children";
    if (ReadWholeFile(file, &text) == 0) ParsePids(text, &children);
  }
  return children;
}

std::set<pid_t> ListThreads(pid_t tgid) {
  std::set<pid_t> tids;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/task", tgid);
  ScopedDir dir(opendir(path));
  if (!dir) return tids;
  while (dirent* e = readdir(dir.get())) {
    char* end = nullptr;
    long tid = std::strtol(e->d_name, &end, 10);
    if (end != e->d_name && *end == '\0' && tid > 0) tids.insert(static_cast<pid_t>(tid));
  }
  return tids;
}

}  // namespace kqd
