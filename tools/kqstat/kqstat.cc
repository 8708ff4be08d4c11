// kqstat: what the kqueued daemon holds — per process its kqueues, knotes by
// filter, pending events and parked kevent calls; per user the usage against
// the limits; totals; the daemon's own descriptors and memory.
//
//   kqstat [-p PID] [--json] [--device PATH]
//
// It asks the daemon with the KQ_IOC_STAT ioctl (proto/kqueue_abi.h,
// docs/abi.md) on a kqueue of its own; the daemon decides what the caller may
// see (root: everything; others: their own kqueues and usage). The manual is
// docs/man/kqstat.1.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "daemon/util/scoped_fd.h"
#include "proto/kqueue_abi.h"

namespace {

struct Options {
  std::string device;
  pid_t pid = 0;
  bool json = false;
};

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: kqstat [-p PID] [--json] [--device PATH]\n"
               "  -p, --pid PID   only the kqueues opened by process PID\n"
               "  --json          one JSON object instead of tables\n"
               "  --device PATH   the kqueue device (default $%s or %s)\n",
               KQ_DEVICE_ENV, KQ_DEFAULT_DEVICE);
}

bool ParsePid(const char* s, pid_t* out) {
  char* end = nullptr;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > 0x7fffffff) return false;
  *out = static_cast<pid_t>(v);
  return true;
}

bool Parse(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-p" || a == "--pid") && i + 1 < argc) {
      if (!ParsePid(argv[++i], &o->pid)) return false;
    } else if (a.rfind("-p", 0) == 0 && a.size() > 2 && a[2] != '-') {
      if (!ParsePid(a.c_str() + 2, &o->pid)) return false;
    } else if (a == "--json") {
      o->json = true;
    } else if (a == "--device" && i + 1 < argc) {
      o->device = argv[++i];
    } else if (a == "-h" || a == "--help") {
      Usage(stdout);
      std::exit(0);
    } else {
      return false;
    }
  }
  if (o->device.empty()) {
    const char* env = getenv(KQ_DEVICE_ENV);
    o->device = (env != nullptr && env[0] != '\0') ? env : KQ_DEFAULT_DEVICE;
  }
  return true;
}

// What one KQ_IOC_STAT answer holds, decoded.
struct Report {
  kq_stat_header head{};
  std::vector<kq_stat_queue> queues;
  std::vector<kq_stat_user> users;
};

// Asks until the buffer is large enough (the state may grow between calls).
// Returns 0 or an errno.
int Fetch(int fd, pid_t pid, Report* r) {
  std::vector<char> buf(64 * 1024);
  for (int attempt = 0; attempt < 8; attempt++) {
    kq_stat_args args{};
    args.buf = reinterpret_cast<uint64_t>(buf.data());
    args.buf_size = buf.size();
    args.pid = pid;
    int n = ioctl(fd, KQ_IOC_STAT, &args);
    if (n < 0) return errno;
    if (n == 0) {
      buf.resize(args.needed + args.needed / 4 + 4096);
      continue;
    }
    if (static_cast<size_t>(n) < sizeof(kq_stat_header)) return EPROTO;
    std::memcpy(&r->head, buf.data(), sizeof r->head);
    const kq_stat_header& h = r->head;
    if (h.stat_version < 1 || h.header_size < sizeof(kq_stat_header) ||
        h.queue_size < sizeof(kq_stat_queue) || h.user_size < sizeof(kq_stat_user) ||
        static_cast<uint64_t>(h.header_size) + uint64_t{h.nqueues} * h.queue_size +
                uint64_t{h.nusers} * h.user_size >
            static_cast<uint64_t>(n))
      return EPROTO;
    // Step by the sizes the daemon states: a newer one may append fields.
    const char* p = buf.data() + h.header_size;
    for (uint32_t i = 0; i < h.nqueues; i++, p += h.queue_size) {
      kq_stat_queue q;
      std::memcpy(&q, p, sizeof q);
      r->queues.push_back(q);
    }
    for (uint32_t i = 0; i < h.nusers; i++, p += h.user_size) {
      kq_stat_user u;
      std::memcpy(&u, p, sizeof u);
      r->users.push_back(u);
    }
    return 0;
  }
  return EAGAIN;
}

// Filter names come from the daemon (KFILTER_BYFILTER), so plug-in filters
// are named too. Slot KQ_STAT_FILTER_SLOTS - 1 counts every higher number.
std::string FilterName(int fd, uint32_t filter) {
  if (filter == KQ_STAT_FILTER_SLOTS - 1) return "OTHER";
  char name[KFILTER_MAXNAME] = {0};
  kfilter_mapping m{};
  m.name = name;
  m.len = sizeof name;
  m.filter = filter;
  std::string s;
  if (ioctl(fd, KFILTER_BYFILTER, &m) == 0) {
    s = name;
    if (s.rfind("EVFILT_", 0) == 0) s = s.substr(7);
  } else {
    s = std::to_string(filter);
  }
  return s;
}

// The process's command name, if we may read it.
std::string Command(pid_t pid) {
  if (pid <= 0) return "?";
  std::string path = "/proc/" + std::to_string(pid) + "/comm";
  FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) return "?";
  char buf[64] = {0};
  std::string s = std::fgets(buf, sizeof buf, f) ? buf : "?";
  std::fclose(f);
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s.empty() ? "?" : s;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

const char* const kResourceNames[KQ_RES_COUNT] = {"kqueues",    "knotes",     "timers",
                                                  "fast_timers", "daemon_fds", "kqueue_names",
                                                  "watched_fds"};

// A resource slot's name; slots a later daemon defines are shown by number.
std::string ResourceName(int i) {
  return i < KQ_RES_COUNT ? kResourceNames[i] : "resource" + std::to_string(i);
}

// The slots to show: the known ones, and any other with a limit set.
std::vector<int> ResourceSlots(const Report& r) {
  std::vector<int> slots;
  for (int i = 0; i < KQ_STAT_RESOURCES; i++) {
    bool used = i < KQ_RES_COUNT;
    for (const kq_stat_user& u : r.users) used = used || u.limit[i] != 0;
    if (used) slots.push_back(i);
  }
  return slots;
}

std::string Bytes(uint64_t n) {
  char buf[32];
  if (n >= (uint64_t{1} << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", n / 1073741824.0);
  else if (n >= (uint64_t{1} << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", n / 1048576.0);
  else
    std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024.0);
  return buf;
}

// Kqueues by opening process, in pid order (then by the daemon's number).
std::map<pid_t, std::vector<const kq_stat_queue*>> ByProcess(const Report& r) {
  std::map<pid_t, std::vector<const kq_stat_queue*>> out;
  for (const kq_stat_queue& q : r.queues) out[q.pid].push_back(&q);
  for (auto& [pid, qs] : out)
    std::sort(qs.begin(), qs.end(),
              [](const kq_stat_queue* a, const kq_stat_queue* b) { return a->id < b->id; });
  return out;
}

void PrintText(int fd, const Report& r, const kq_version& v) {
  const kq_stat_header& h = r.head;
  std::printf("%s (ABI %u), pid %d, up %llu s: %u fds, RSS %s, VSZ %s\n", v.daemon_version,
              v.abi_version, h.daemon_pid, static_cast<unsigned long long>(h.uptime_sec),
              h.daemon_fds, Bytes(h.daemon_rss).c_str(), Bytes(h.daemon_vsize).c_str());
  std::printf("totals: %llu kqueues, %llu knotes, %llu pending, %llu waiting calls",
              static_cast<unsigned long long>(h.total_kqueues),
              static_cast<unsigned long long>(h.total_knotes),
              static_cast<unsigned long long>(h.total_pending),
              static_cast<unsigned long long>(h.total_waiters));
  if (h.log_suppressed > 0)
    std::printf(", %llu log lines rate-limited", static_cast<unsigned long long>(h.log_suppressed));
  std::printf("\n\n");

  std::printf("%-8s %-6s %-15s %-6s %7s %8s %8s  %s\n", "PID", "UID", "COMMAND", "KQ", "KNOTES",
              "PENDING", "WAITERS", "KNOTES BY FILTER");
  for (const auto& [pid, qs] : ByProcess(r)) {
    std::string comm = Command(pid);
    for (const kq_stat_queue* q : qs) {
      std::string filters;
      for (uint32_t f = 0; f < KQ_STAT_FILTER_SLOTS; f++) {
        if (q->by_filter[f] == 0) continue;
        if (!filters.empty()) filters += ' ';
        filters += FilterName(fd, f) + ":" + std::to_string(q->by_filter[f]);
      }
      std::printf("%-8d %-6u %-15.15s %-6llu %7u %8u %8u  %s\n", pid, q->uid, comm.c_str(),
                  static_cast<unsigned long long>(q->id), q->knotes, q->pending, q->waiters,
                  filters.empty() ? "-" : filters.c_str());
    }
  }
  const std::vector<int> slots = ResourceSlots(r);
  std::printf("\n%-8s", "UID");
  for (int i : slots) std::printf(" %20s", ResourceName(i).c_str());
  std::printf("\n");
  for (const kq_stat_user& u : r.users) {
    std::printf("%-8u", u.uid);
    for (int i : slots) {
      std::string cell = std::to_string(u.used[i]) + "/" + std::to_string(u.limit[i]);
      std::printf(" %20s", cell.c_str());
    }
    std::printf("\n");
  }
}

void PrintJson(int fd, const Report& r, const kq_version& v) {
  const kq_stat_header& h = r.head;
  std::printf("{\"daemon\":{\"version\":%s,\"abi_version\":%u,\"stat_version\":%u,\"pid\":%d,"
              "\"uptime_sec\":%llu,\"fds\":%u,\"rss_bytes\":%llu,\"vsize_bytes\":%llu,"
              "\"log_lines_suppressed\":%llu},\n",
              JsonString(v.daemon_version).c_str(), v.abi_version, h.stat_version, h.daemon_pid,
              static_cast<unsigned long long>(h.uptime_sec), h.daemon_fds,
              static_cast<unsigned long long>(h.daemon_rss),
              static_cast<unsigned long long>(h.daemon_vsize),
              static_cast<unsigned long long>(h.log_suppressed));
  std::printf(" \"totals\":{\"kqueues\":%llu,\"knotes\":%llu,\"pending\":%llu,\"waiters\":%llu},\n",
              static_cast<unsigned long long>(h.total_kqueues),
              static_cast<unsigned long long>(h.total_knotes),
              static_cast<unsigned long long>(h.total_pending),
              static_cast<unsigned long long>(h.total_waiters));
  std::printf(" \"processes\":[");
  bool first_p = true;
  for (const auto& [pid, qs] : ByProcess(r)) {
    std::printf("%s\n  {\"pid\":%d,\"uid\":%u,\"command\":%s,\"kqueues\":[", first_p ? "" : ",",
                pid, qs.front()->uid, JsonString(Command(pid)).c_str());
    first_p = false;
    bool first_q = true;
    for (const kq_stat_queue* q : qs) {
      std::printf("%s{\"id\":%llu,\"uid\":%u,\"knotes\":%u,\"pending\":%u,\"waiters\":%u,"
                  "\"knotes_by_filter\":{",
                  first_q ? "" : ",", static_cast<unsigned long long>(q->id), q->uid, q->knotes,
                  q->pending, q->waiters);
      first_q = false;
      bool first_f = true;
      for (uint32_t f = 0; f < KQ_STAT_FILTER_SLOTS; f++) {
        if (q->by_filter[f] == 0) continue;
        std::printf("%s%s:%u", first_f ? "" : ",", JsonString(FilterName(fd, f)).c_str(),
                    q->by_filter[f]);
        first_f = false;
      }
      std::printf("}}");
    }
    std::printf("]}");
  }
  std::printf("],\n \"users\":[");
  bool first_u = true;
  for (const kq_stat_user& u : r.users) {
    std::printf("%s\n  {\"uid\":%u", first_u ? "" : ",", u.uid);
    first_u = false;
    for (int i : ResourceSlots(r))
      std::printf(",\"%s\":{\"used\":%llu,\"limit\":%llu}", ResourceName(i).c_str(),
                  static_cast<unsigned long long>(u.used[i]),
                  static_cast<unsigned long long>(u.limit[i]));
    std::printf("}");
  }
  std::printf("]}\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!Parse(argc, argv, &opt)) {
    Usage(stderr);
    return 2;
  }
  kqd::ScopedFd kq(open(opt.device.c_str(), O_RDWR | O_CLOEXEC));
  const int fd = kq.get();
  if (!kq) {
    std::fprintf(stderr, "kqstat: %s: %s (is kqueued running?)\n", opt.device.c_str(),
                 std::strerror(errno));
    return 1;
  }
  kq_version v{};
  if (ioctl(fd, KQ_IOC_VERSION, &v) != 0) {
    std::fprintf(stderr, "kqstat: %s is not a kqueue device: %s\n", opt.device.c_str(),
                 std::strerror(errno));
    return 1;
  }
  if (v.abi_version < 2) {
    std::fprintf(stderr, "kqstat: the daemon speaks ABI %u, which has no KQ_IOC_STAT (2 needed)\n",
                 v.abi_version);
    return 1;
  }
  Report r;
  if (int err = Fetch(fd, opt.pid, &r)) {
    std::fprintf(stderr, "kqstat: KQ_IOC_STAT: %s\n", std::strerror(err));
    return 1;
  }
  if (opt.json)
    PrintJson(fd, r, v);
  else
    PrintText(fd, r, v);
  return 0;
}
