// SignalTrace: the kernel's signal:signal_generate tracepoint, read through
// perf_event_open — one event per online CPU, each with a ring buffer whose
// fd is watched by the Reactor.
//
// Why a tracepoint: it fires on every attempt to send a signal, whatever the
// target does with it (ignored, blocked, caught, default action), and it only
// observes. signalfd, the other candidate (libkqueue's), needs the signal
// blocked in the target and then consumes it, so handlers never run; only a
// tracepoint lets EVFILT_SIGNAL count the way BSD does while leaving the
// process's dispositions, masks and handlers untouched.
//
// Record layout comes from the tracepoint's tracefs "format" file at run
// time (offsets differ between kernels): nothing here hardcodes an offset.
//
// Needs root or CAP_PERFMON (system-wide tracepoint samples with raw data).
// Open() mounts tracefs at /sys/kernel/tracing if neither it nor the debugfs
// copy (/sys/kernel/debug/tracing) is available.
//
// Limits (documented, not hidden): CPUs brought online after Open() are not
// watched; a ring that fills up before the reactor drains it loses samples,
// which the kernel reports (a line goes to stderr).
#ifndef KQUEUED_DAEMON_FILTERS_SIGNAL_SIGNAL_TRACE_H_
#define KQUEUED_DAEMON_FILTERS_SIGNAL_SIGNAL_TRACE_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "daemon/core/reactor.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

// One field of a tracepoint record, as its format file describes it.
struct TraceField {
  bool present = false;
  size_t offset = 0;
  size_t size = 0;
  bool is_signed = false;
};

// The fields of signal_generate that EVFILT_SIGNAL uses.
struct SignalTraceFormat {
  TraceField sig;     // the signal number
  TraceField pid;     // the target thread's id (the leader's for kill())
  TraceField group;   // 1: process-directed, 0: thread-directed (tgkill...)
  TraceField result;  // see SignalResult
};

// The kernel's TRACE_SIGNAL_* values in the "result" field.
enum SignalResult : int {
  kSignalDelivered = 0,
  kSignalIgnored = 1,
  kSignalAlreadyPending = 2,
  kSignalOverflowFail = 3,
  kSignalLoseInfo = 4,
};

// Parses the text of a tracefs format file. False unless sig and pid are
// described with a size of 1, 2, 4 or 8 bytes (group and result are
// optional: group is then taken as 1, result as delivered).
bool ParseSignalTraceFormat(const std::string& text, SignalTraceFormat* out);

// One signal generation.
struct SignalSample {
  uint64_t time_ns = 0;  // CLOCK_MONOTONIC
  pid_t pid = 0;         // target thread id
  int sig = 0;
  int group = 1;
  int result = kSignalDelivered;
};

// Decodes one raw tracepoint record (the PERF_SAMPLE_RAW bytes, starting
// with the common fields). False if a field lies outside `len`.
bool DecodeSignalSample(const SignalTraceFormat& format, const uint8_t* raw, size_t len,
                        SignalSample* out);

// One generation of the tracepoint reader: its filter is fixed when it is
// opened, because the kernel accepts PERF_EVENT_IOC_SET_FILTER only once per
// event (a second call is EEXIST). Changing the filter means opening a new
// generation and retiring the old one (see signal_filter.cc).
class SignalTrace {
 public:
  // Runs in the reactor's dispatch with no lock held, once per drained ring,
  // with the samples in the order that CPU saw them.
  using Handler = std::function<void(const std::vector<SignalSample>&)>;

  // Opens the tracepoint on every online CPU with `filter` (ftrace filter
  // syntax, e.g. "sig == 10 && (pid == 1 || pid == 2)"; empty: none),
  // enables it and adds the rings to `reactor`. Null with *error: ENOTSUP
  // when the tracepoint is unavailable or not permitted (no tracefs, no
  // privilege, a kernel before 4.1), EINVAL (or E2BIG) when the kernel
  // refuses the filter, another errno (EMFILE, ENOMEM...) for a shortage.
  static std::shared_ptr<SignalTrace> Open(Reactor* reactor, const std::string& filter,
                                           Handler handler, int* error);
  ~SignalTrace();
  SignalTrace(const SignalTrace&) = delete;
  SignalTrace& operator=(const SignalTrace&) = delete;

  // Starts or stops sampling on every CPU.
  int Enable(bool on);

  // Reads every ring now. Only from the reactor's dispatch (a callback, a
  // timer, a catch-up hook): the rings are drained by one thread at a time
  // without a lock. Every Reactor::CatchUp() calls it (see Open).
  void DrainAll();

  // Longest filter string the kernel accepts (strndup_user with PAGE_SIZE,
  // less the NUL, on 4 KiB pages; about 180 "pid == N" terms).
  static constexpr size_t kMaxFilterLength = 4000;

 private:
  struct Cpu;
  struct PassKey {};

 public:
  // For Open() (make_shared needs a public constructor).
  SignalTrace(PassKey, Reactor* reactor, Handler handler, SignalTraceFormat format);

 private:
  // Reads everything the kernel has written to one CPU's ring.
  void Drain(size_t index);

  Reactor* const reactor_;
  const Handler handler_;
  const SignalTraceFormat format_;
  std::vector<std::unique_ptr<Cpu>> cpus_;  // fixed after Open()
  uint64_t catch_up_hook_ = 0;  // the reactor's
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_SIGNAL_SIGNAL_TRACE_H_
