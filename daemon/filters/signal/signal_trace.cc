#include "daemon/filters/signal/signal_trace.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <utility>

#include "daemon/os/read_file.h"

namespace kqd {
namespace {

// Where tracefs may be found, best first. The first is also where we mount
// it if neither is there.
constexpr const char* kTracefsDirs[] = {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"};
constexpr const char* kEventDir = "/events/signal/signal_generate/";
constexpr const char* kInstancePrefix = "kqueued-";

// Ring size per CPU and instance. An event is about 56 bytes, so 256 KiB
// hold ~4000 signals between two reactor wake-ups.
constexpr const char* kRingKb = "256";

// The ring buffer's event header: 5 bits of type_len, 27 of time delta.
constexpr uint32_t kTypePadding = 29;
constexpr uint32_t kTypeTimeExtend = 30;
constexpr uint32_t kTypeTimeStamp = 31;
constexpr uint32_t kMaxDataType = 28;  // 1..28: data of type_len * 4 bytes
// Flags in the page's commit word: events were missed before this page.
constexpr uint64_t kMissedEvents = 1ULL << 31;
constexpr uint64_t kMissedStored = 1ULL << 30;

// Finds tracefs (its root), the tracepoint's format text and the ring
// page's layout text, mounting tracefs if needed.
int FindTracepoint(std::string* root, std::string* format, std::string* header_page) {
  for (int attempt = 0; attempt < 2; attempt++) {
    for (const char* dir : kTracefsDirs) {
      std::string base = std::string(dir) + kEventDir;
      if (ReadWholeFile(base + "format", format) != 0) continue;
      if (ReadWholeFile(std::string(dir) + "/events/header_page", header_page) != 0) continue;
      struct stat st;
      if (stat((std::string(dir) + "/instances").c_str(), &st) != 0) continue;
      *root = dir;
      return 0;
    }
    // Neither is there: tracefs is simply not mounted on many systems. An
    // error (EBUSY if mounted meanwhile, EPERM without privilege) just
    // leaves the second look to fail or succeed on its own.
    if (attempt == 0) mount("tracefs", kTracefsDirs[0], "tracefs", 0, nullptr);
  }
  return ENOTSUP;
}

// Parses "0-3,6,8-9" (sysfs CPU lists).
std::vector<int> ParseCpuList(const std::string& text) {
  std::vector<int> cpus;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) {
    int a = 0, b = 0;
    int n = sscanf(part.c_str(), "%d-%d", &a, &b);
    if (n == 1) b = a;
    if (n < 1 || a < 0 || b < a) continue;
    for (int c = a; c <= b; c++) cpus.push_back(c);
  }
  return cpus;
}

std::vector<int> OnlineCpus() {
  std::string text;
  if (ReadWholeFile("/sys/devices/system/cpu/online", &text) == 0) {
    std::vector<int> cpus = ParseCpuList(text);
    if (!cpus.empty()) return cpus;
  }
  std::vector<int> cpus;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  for (int c = 0; c < (n > 0 ? n : 1); c++) cpus.push_back(c);
  return cpus;
}

// errno values that mean "this kernel or this daemon cannot trace".
bool MeansUnsupported(int err) {
  return err == EACCES || err == EPERM || err == ENOENT || err == ENODEV ||
         err == ENOSYS || err == EOPNOTSUPP;
}

int64_t ReadInt(const uint8_t* p, const TraceField& f) {
  switch (f.size) {
    case 1: {
      uint8_t v;
      memcpy(&v, p, 1);
      return f.is_signed ? static_cast<int8_t>(v) : v;
    }
    case 2: {
      uint16_t v;
      memcpy(&v, p, 2);
      return f.is_signed ? static_cast<int16_t>(v) : v;
    }
    case 4: {
      uint32_t v;
      memcpy(&v, p, 4);
      return f.is_signed ? static_cast<int32_t>(v) : v;
    }
    default: {
      int64_t v;
      memcpy(&v, p, 8);
      return v;
    }
  }
}

bool ValidIntField(const TraceField& f) {
  return f.present && (f.size == 1 || f.size == 2 || f.size == 4 || f.size == 8);
}

// The number after "key:" up to the next ';' in `line`, if any.
bool FieldNumber(const std::string& line, const char* key, size_t* out) {
  size_t at = line.find(key);
  if (at == std::string::npos) return false;
  const char* s = line.c_str() + at + strlen(key);
  char* end = nullptr;
  unsigned long v = strtoul(s, &end, 10);
  if (end == s) return false;
  *out = v;
  return true;
}

uint64_t ReadUnsigned(const uint8_t* p, size_t size) {
  switch (size) {
    case 1: return p[0];
    case 2: { uint16_t v; memcpy(&v, p, 2); return v; }
    case 4: { uint32_t v; memcpy(&v, p, 4); return v; }
    default: { uint64_t v; memcpy(&v, p, 8); return v; }
  }
}

// Removes instances a daemon left behind when it was killed: theirs are
// named kqueued-<pid>-<n>, and that pid runs no process any more. (A live
// daemon's instance cannot be removed anyway while its rings are open.)
void RemoveStaleInstances(const std::string& instances) {
  DIR* dir = opendir(instances.c_str());
  if (dir == nullptr) return;
  while (dirent* e = readdir(dir)) {
    const std::string name = e->d_name;
    if (name.compare(0, strlen(kInstancePrefix), kInstancePrefix) != 0) continue;
    const long pid = strtol(name.c_str() + strlen(kInstancePrefix), nullptr, 10);
    if (pid <= 0 || pid == getpid()) continue;
    if (kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    rmdir((instances + "/" + name).c_str());
  }
  closedir(dir);
}

}  // namespace

bool ParseSignalTraceFormat(const std::string& text, SignalTraceFormat* out) {
  *out = SignalTraceFormat();
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) {
    // "\tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;"
    size_t at = line.find("field:");
    if (at == std::string::npos) continue;
    size_t semi = line.find(';', at);
    if (semi == std::string::npos) continue;
    std::string decl = line.substr(at + 6, semi - at - 6);
    size_t bracket = decl.find('[');
    if (bracket != std::string::npos) decl.resize(bracket);
    while (!decl.empty() && decl.back() == ' ') decl.pop_back();
    size_t space = decl.find_last_of(" \t*");
    std::string name = space == std::string::npos ? decl : decl.substr(space + 1);
    TraceField f;
    size_t is_signed = 0;
    if (!FieldNumber(line, "offset:", &f.offset) || !FieldNumber(line, "size:", &f.size)) {
      continue;
    }
    FieldNumber(line, "signed:", &is_signed);
    f.is_signed = is_signed != 0;
    f.present = true;
    if (name == "sig") out->sig = f;
    else if (name == "pid") out->pid = f;
    else if (name == "group") out->group = f;
    else if (name == "result") out->result = f;
  }
  if (out->group.present && !ValidIntField(out->group)) out->group.present = false;
  if (out->result.present && !ValidIntField(out->result)) out->result.present = false;
  return ValidIntField(out->sig) && ValidIntField(out->pid);
}

bool DecodeSignalSample(const SignalTraceFormat& format, const uint8_t* raw, size_t len,
                        SignalSample* out) {
  auto fits = [len](const TraceField& f) { return f.offset + f.size <= len; };
  if (!fits(format.sig) || !fits(format.pid)) return false;
  out->sig = static_cast<int>(ReadInt(raw + format.sig.offset, format.sig));
  out->pid = static_cast<pid_t>(ReadInt(raw + format.pid.offset, format.pid));
  out->group = 1;
  if (format.group.present && fits(format.group)) {
    out->group = static_cast<int>(ReadInt(raw + format.group.offset, format.group));
  }
  out->result = kSignalDelivered;
  if (format.result.present && fits(format.result)) {
    out->result = static_cast<int>(ReadInt(raw + format.result.offset, format.result));
  }
  return true;
}

bool ParseRingPageFormat(const std::string& text, RingPageFormat* out) {
  *out = RingPageFormat();
  bool have_ts = false, have_commit = false, have_data = false;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line)) {
    // "\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;"
    size_t offset = 0, size = 0;
    if (line.find("field:") == std::string::npos || !FieldNumber(line, "offset:", &offset) ||
        !FieldNumber(line, "size:", &size)) {
      continue;
    }
    if (line.find(" timestamp;") != std::string::npos) {
      have_ts = offset == 0 && size == 8;
    } else if (line.find(" commit;") != std::string::npos) {
      have_commit = size == 4 || size == 8;
      out->commit_offset = offset;
      out->commit_size = size;
    } else if (line.find(" data;") != std::string::npos) {
      have_data = size > 0;
      out->data_offset = offset;
      out->page_size = offset + size;
    }
  }
  return have_ts && have_commit && have_data &&
         out->commit_offset + out->commit_size <= out->data_offset;
}

bool DecodeRingPage(const RingPageFormat& pf, const SignalTraceFormat& format,
                    const uint8_t* page, size_t len, std::vector<SignalSample>* out,
                    bool* missed) {
  *missed = false;
  if (len < pf.data_offset) return false;
  uint64_t ts = ReadUnsigned(page, 8);
  const uint64_t commit = ReadUnsigned(page + pf.commit_offset, pf.commit_size);
  *missed = (commit & (kMissedEvents | kMissedStored)) != 0;
  const size_t used = static_cast<size_t>(commit & (kMissedStored - 1));
  if (used > len - pf.data_offset) return false;
  const uint8_t* data = page + pf.data_offset;
  size_t pos = 0;
  while (pos + 4 <= used) {
    uint32_t head;
    memcpy(&head, data + pos, 4);
    const uint32_t type_len = head & 0x1f;
    const uint32_t delta = head >> 5;
    uint32_t array0 = 0;
    if (type_len == 0 || type_len >= kTypePadding) {
      if (pos + 8 > used) return false;
      memcpy(&array0, data + pos + 4, 4);
    }
    if (type_len == kTypePadding) {
      if (delta == 0) return true;  // the rest of the page is empty
      // A discarded event (one the filter refused): its time still counts,
      // the writer's next delta is relative to it.
      ts += delta;
      if (array0 < 4 || pos + 4 + array0 > used) return false;
      pos += 4 + array0;
    } else if (type_len == kTypeTimeExtend) {
      ts += (static_cast<uint64_t>(array0) << 27) | delta;
      pos += 8;
    } else if (type_len == kTypeTimeStamp) {
      // An absolute time, its top bits those of the page's.
      const uint64_t abs = (static_cast<uint64_t>(array0) << 27) | delta;
      const uint64_t low_mask = (1ULL << 59) - 1;
      ts = (ts & ~low_mask) | (abs & low_mask);
      pos += 8;
    } else {
      ts += delta;
      const uint8_t* body;
      size_t body_len;
      if (type_len == 0) {  // a long event: its length follows the header
        if (array0 < 4 || pos + 4 + array0 > used) return false;
        body = data + pos + 8;
        body_len = array0 - 4;
        pos += 4 + array0;
      } else {
        body_len = type_len * 4;
        if (type_len > kMaxDataType || pos + 4 + body_len > used) return false;
        body = data + pos + 4;
        pos += 4 + body_len;
      }
      SignalSample s;
      s.time_ns = ts;
      if (DecodeSignalSample(format, body, body_len, &s)) out->push_back(s);
    }
  }
  return true;
}

struct SignalTrace::Cpu {
  ScopedFd fd;  // per_cpu/cpuN/trace_pipe_raw, non-blocking
  int64_t token = 0;  // the reactor's, > 0 once added
  std::vector<uint8_t> page;  // scratch for one page (reactor thread only)
};

SignalTrace::SignalTrace(PassKey, Reactor* reactor, Handler handler, SignalTraceFormat format,
                         RingPageFormat page_format, std::string instance_dir)
    : reactor_(reactor),
      handler_(std::move(handler)),
      format_(format),
      page_format_(page_format),
      instance_dir_(std::move(instance_dir)) {}

std::shared_ptr<SignalTrace> SignalTrace::Open(Reactor* reactor, const std::string& filter,
                                               Handler handler, int* error) {
  std::string root, format_text, header_text;
  if (int err = FindTracepoint(&root, &format_text, &header_text)) {
    *error = err;
    return nullptr;
  }
  SignalTraceFormat format;
  RingPageFormat page_format;
  if (!ParseSignalTraceFormat(format_text, &format) ||
      !ParseRingPageFormat(header_text, &page_format)) {
    *error = ENOTSUP;  // a kernel whose records we do not understand
    return nullptr;
  }
  const std::string instances = root + "/instances";
  static std::atomic<bool> cleaned{false};
  if (!cleaned.exchange(true)) RemoveStaleInstances(instances);

  // A name of our own: this daemon's pid and a counter.
  static std::atomic<uint64_t> counter{0};
  std::string dir;
  for (;;) {
    dir = instances + "/" + kInstancePrefix + std::to_string(getpid()) + "-" +
          std::to_string(counter.fetch_add(1));
    if (mkdir(dir.c_str(), 0700) == 0) break;
    if (errno == EEXIST) continue;
    *error = MeansUnsupported(errno) ? ENOTSUP : errno;
    return nullptr;
  }
  // From here the destructor removes the instance.
  auto trace = std::make_shared<SignalTrace>(PassKey(), reactor, std::move(handler), format,
                                             page_format, dir);
  // CLOCK_MONOTONIC times compare with the time a knote was registered and
  // with the hand-over between two generations; wake a reader for every
  // event (buffer_percent 0), not when the ring is half full.
  if (int err = WriteSmallFile(dir + "/trace_clock", "mono")) {
    *error = MeansUnsupported(err) || err == EINVAL ? ENOTSUP : err;
    return nullptr;
  }
  if (int err = WriteSmallFile(dir + "/buffer_size_kb", kRingKb)) {
    *error = err == EINVAL ? ENOMEM : err;
    return nullptr;
  }
  WriteSmallFile(dir + "/buffer_percent", "0");  // older kernels: no such file
  if (!filter.empty()) {
    if (int err = WriteSmallFile(dir + kEventDir + "filter", filter)) {
      *error = err;  // EINVAL: the kernel refused it
      return nullptr;
    }
  }
  for (int cpu : OnlineCpus()) {
    const std::string path = dir + "/per_cpu/cpu" + std::to_string(cpu) + "/trace_pipe_raw";
    int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT && !trace->cpus_.empty()) continue;  // went offline
      *error = MeansUnsupported(err) ? ENOTSUP : err;
      return nullptr;
    }
    auto c = std::make_unique<Cpu>();
    c->fd.reset(fd);
    c->page.resize(page_format.page_size);
    trace->cpus_.push_back(std::move(c));
  }
  if (trace->cpus_.empty()) {
    *error = ENOTSUP;
    return nullptr;
  }
  // Only now that cpus_ is complete (it never changes afterwards) may the
  // reactor thread start draining.
  std::weak_ptr<SignalTrace> weak = trace;
  for (size_t i = 0; i < trace->cpus_.size(); i++) {
    int64_t token = reactor->AddFd(trace->cpus_[i]->fd.get(), EPOLLIN, [weak, i](uint32_t) {
      if (auto t = weak.lock()) t->Drain(i);
    });
    if (token < 0) {
      *error = static_cast<int>(-token);
      return nullptr;  // the destructor removes those already added
    }
    trace->cpus_[i]->token = token;
  }
  // Causality: the rings' readiness comes after an irq_work, later than
  // the kernel recorded the event; a kevent catching up looks at the rings
  // itself (one poll() over them).
  trace->catch_up_hook_ = reactor->AddCatchUpHook([weak] {
    if (auto t = weak.lock()) t->DrainAll();
  });
  if (int err = trace->Enable(true)) {
    *error = err;
    return nullptr;
  }
  return trace;
}

SignalTrace::~SignalTrace() {
  if (catch_up_hook_ != 0) reactor_->RemoveCatchUpHook(catch_up_hook_);
  for (auto& c : cpus_) {
    if (c->token > 0) reactor_->RemoveFd(c->fd.get(), c->token);
  }
  // A callback still running holds a strong reference, so none can be
  // mid-Drain here unless this destructor runs inside it, after Drain
  // returned. The instance can only go once its files are closed.
  Enable(false);
  cpus_.clear();
  if (rmdir(instance_dir_.c_str()) != 0) {
    std::fprintf(stderr, "kqueued: cannot remove trace instance %s: %s\n", instance_dir_.c_str(),
                 strerror(errno));
  }
}

int SignalTrace::Enable(bool on) {
  return WriteSmallFile(instance_dir_ + kEventDir + "enable", on ? "1" : "0");
}

void SignalTrace::DrainAll() {
  std::vector<pollfd> fds(cpus_.size());
  for (size_t i = 0; i < cpus_.size(); i++) fds[i] = {cpus_[i]->fd.get(), POLLIN, 0};
  if (poll(fds.data(), fds.size(), 0) <= 0) return;
  for (size_t i = 0; i < cpus_.size(); i++) {
    if (fds[i].revents != 0) Drain(i);
  }
}

void SignalTrace::Drain(size_t index) {
  // Only the reactor's dispatch drains (its loop thread or a catch-up), one
  // callback at a time: no lock.
  Cpu& c = *cpus_[index];
  std::vector<SignalSample> samples;
  bool lost = false;
  // Each read hands out one page (or the committed part of the page being
  // written) until the ring is empty (EAGAIN).
  for (;;) {
    ssize_t n = read(c.fd.get(), c.page.data(), c.page.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    bool missed = false;
    DecodeRingPage(page_format_, format_, c.page.data(), static_cast<size_t>(n), &samples,
                   &missed);
    lost = lost || missed;
  }
  if (lost) {
    std::fprintf(stderr, "kqueued: EVFILT_SIGNAL lost signal records on a full ring\n");
  }
  if (!samples.empty()) handler_(samples);
}

}  // namespace kqd
