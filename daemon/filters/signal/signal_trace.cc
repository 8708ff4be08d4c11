#include "daemon/filters/signal/signal_trace.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
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

// Ring size per CPU, in data pages (a power of two). A sample is about 72
// bytes, so 32 pages hold ~1800 signals between two reactor wake-ups.
constexpr size_t kRingPages = 32;

// Finds the tracepoint's id and format text, mounting tracefs if needed.
int FindTracepoint(uint64_t* id, std::string* format) {
  for (int attempt = 0; attempt < 2; attempt++) {
    for (const char* dir : kTracefsDirs) {
      std::string base = std::string(dir) + kEventDir;
      std::string id_text;
      if (ReadWholeFile(base + "id", &id_text) != 0) continue;
      if (ReadWholeFile(base + "format", format) != 0) continue;
      char* end = nullptr;
      unsigned long long v = strtoull(id_text.c_str(), &end, 10);
      if (end == id_text.c_str()) continue;
      *id = v;
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

// An mmap'ed perf ring, unmapped exactly once.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, size_t len) : addr_(addr), len_(len) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr_ != nullptr) munmap(addr_, len_);
  }
  uint8_t* bytes() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return len_; }

 private:
  void* addr_ = nullptr;
  size_t len_ = 0;
};

long PerfEventOpen(perf_event_attr* attr, int cpu) {
  // pid -1, cpu N: every task on that CPU (needs CAP_PERFMON).
  return syscall(SYS_perf_event_open, attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

// Copies `len` bytes at ring position `pos` (which may wrap) into `out`.
void CopyFromRing(const uint8_t* data, uint64_t size, uint64_t pos, void* out, size_t len) {
  const uint64_t start = pos % size;
  const size_t first = static_cast<size_t>(std::min<uint64_t>(len, size - start));
  memcpy(out, data + start, first);
  if (first < len) memcpy(static_cast<uint8_t*>(out) + first, data, len - first);
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

struct SignalTrace::Cpu {
  ScopedFd fd;
  std::unique_ptr<Mapping> ring;
  int64_t token = 0;  // the reactor's, > 0 once added
  std::vector<uint8_t> record;  // scratch for one record (reactor thread only)
};

SignalTrace::SignalTrace(PassKey, Reactor* reactor, Handler handler, SignalTraceFormat format)
    : reactor_(reactor), handler_(std::move(handler)), format_(format) {}

std::shared_ptr<SignalTrace> SignalTrace::Open(Reactor* reactor, const std::string& filter,
                                               Handler handler, int* error) {
  uint64_t id = 0;
  std::string format_text;
  if (int err = FindTracepoint(&id, &format_text)) {
    *error = err;
    return nullptr;
  }
  SignalTraceFormat format;
  if (!ParseSignalTraceFormat(format_text, &format)) {
    *error = ENOTSUP;  // a kernel whose record we do not understand
    return nullptr;
  }
  auto trace = std::make_shared<SignalTrace>(PassKey(), reactor, std::move(handler), format);

  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (int cpu : OnlineCpus()) {
    perf_event_attr attr{};
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_TRACEPOINT;
    attr.config = id;
    attr.sample_period = 1;  // every hit
    attr.sample_type = PERF_SAMPLE_TIME | PERF_SAMPLE_RAW;
    attr.wakeup_events = 1;  // wake the reactor for each sample
    attr.disabled = 1;       // until the filter is in place
    // CLOCK_MONOTONIC sample times can be compared with the time a knote
    // was registered and with the hand-over between two generations.
    attr.use_clockid = 1;
    attr.clockid = CLOCK_MONOTONIC;
    long fd = PerfEventOpen(&attr, cpu);
    if (fd < 0) {
      const int err = errno;
      if (err == ENODEV && !trace->cpus_.empty()) continue;  // went offline
      // EINVAL here is a kernel without use_clockid (before 4.1).
      *error = MeansUnsupported(err) || err == EINVAL ? ENOTSUP : err;
      return nullptr;
    }
    auto c = std::make_unique<Cpu>();
    c->fd.reset(static_cast<int>(fd));
    if (!filter.empty() &&
        ioctl(c->fd.get(), PERF_EVENT_IOC_SET_FILTER, filter.c_str()) != 0) {
      *error = errno;
      return nullptr;
    }
    const size_t len = (1 + kRingPages) * page;
    void* addr = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd.get(), 0);
    if (addr == MAP_FAILED) {
      *error = errno == EPERM ? ENOMEM : errno;  // over perf_event_mlock_kb
      return nullptr;
    }
    c->ring = std::make_unique<Mapping>(addr, len);
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
  // Causality: a ring's fd turns readable only after an irq_work, later
  // than the kernel wrote the sample; a kevent catching up reads the rings'
  // heads directly (no syscall when they are empty).
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
  // Then the rings are unmapped and the fds closed (members). A callback
  // still running holds a strong reference, so none can be mid-Drain here
  // unless this destructor is running inside it, after Drain returned.
}

int SignalTrace::Enable(bool on) {
  for (auto& c : cpus_) {
    if (ioctl(c->fd.get(), on ? PERF_EVENT_IOC_ENABLE : PERF_EVENT_IOC_DISABLE, 0) != 0) {
      return errno;
    }
  }
  return 0;
}

void SignalTrace::DrainAll() {
  for (size_t i = 0; i < cpus_.size(); i++) Drain(i);
}

void SignalTrace::Drain(size_t index) {
  // Only the reactor's dispatch drains (its loop thread or a catch-up), one
  // callback at a time: no lock.
  Cpu& c = *cpus_[index];
  auto* meta = reinterpret_cast<perf_event_mmap_page*>(c.ring->bytes());
  if (__atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE) == meta->data_tail) return;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const uint64_t data_offset = meta->data_offset != 0 ? meta->data_offset : page;
  const uint64_t data_size = meta->data_size != 0 ? meta->data_size : kRingPages * page;
  const uint8_t* data = c.ring->bytes() + data_offset;

  // Pairs with the kernel's write barrier: records up to head are complete.
  const uint64_t head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
  uint64_t tail = meta->data_tail;
  std::vector<SignalSample> samples;
  uint64_t lost = 0;
  while (tail < head) {
    perf_event_header hdr;
    if (head - tail < sizeof hdr) break;
    CopyFromRing(data, data_size, tail, &hdr, sizeof hdr);
    if (hdr.size < sizeof hdr || hdr.size > head - tail) break;  // cannot happen
    c.record.resize(hdr.size);
    CopyFromRing(data, data_size, tail, c.record.data(), hdr.size);
    tail += hdr.size;
    const uint8_t* body = c.record.data() + sizeof hdr;
    const size_t body_len = hdr.size - sizeof hdr;
    if (hdr.type == PERF_RECORD_SAMPLE) {
      // PERF_SAMPLE_TIME then PERF_SAMPLE_RAW: u64 time, u32 size, bytes.
      if (body_len < 12) continue;
      SignalSample s;
      uint64_t time;
      uint32_t raw_size;
      memcpy(&time, body, 8);
      memcpy(&raw_size, body + 8, 4);
      if (raw_size > body_len - 12) continue;
      s.time_ns = time;
      if (DecodeSignalSample(format_, body + 12, raw_size, &s)) samples.push_back(s);
    } else if (hdr.type == PERF_RECORD_LOST && body_len >= 16) {
      uint64_t n;
      memcpy(&n, body + 8, 8);  // after the event id
      lost += n;
    }
  }
  // Hands the space back to the kernel once the records are copied out.
  __atomic_store_n(&meta->data_tail, tail, __ATOMIC_RELEASE);
  if (lost != 0) {
    std::fprintf(stderr, "kqueued: EVFILT_SIGNAL lost %llu signal records on a full ring\n",
                 static_cast<unsigned long long>(lost));
  }
  if (!samples.empty()) handler_(samples);
}

}  // namespace kqd
