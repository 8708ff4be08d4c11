// SignalTrace: the kernel's signal:signal_generate tracepoint, recorded in
// a private ftrace instance (tracefs instances/kqueued-<pid>-<n>) and read
// from its per-CPU trace_pipe_raw files, which the Reactor watches.
//
// Why a tracepoint: it fires on every attempt to send a signal, whatever the
// target does with it (ignored, blocked, caught, default action), and it only
// observes. signalfd, the other candidate (libkqueue's), needs the signal
// blocked in the target and then consumes it, so handlers never run; only a
// tracepoint lets EVFILT_SIGNAL count the way BSD does while leaving the
// process's dispositions, masks and handlers untouched.
//
// Why ftrace and not perf: per-CPU perf sampling events on the same
// tracepoint (this reader until issue 11 #5) lose samples of signals that
// timers generate (hrtimer interrupt context on an idle CPU): on 6.18 1-3 %
// of them, sometimes most of one CPU's, never reached the ring although the
// event's own count saw them, with no lost or throttle record. The ftrace
// ring buffer of an instance recorded every one in the same runs.
//
// Record layout comes from the tracepoint's tracefs "format" file and the
// ring's page layout from "events/header_page", both at run time (offsets
// differ between kernels): nothing here hardcodes an offset.
//
// Needs root (tracefs instances and their files are root's). Open() mounts
// tracefs at /sys/kernel/tracing if neither it nor the debugfs copy
// (/sys/kernel/debug/tracing) is available, and removes instances left by a
// daemon that no longer runs.
//
// Limits (documented, not hidden): CPUs brought online after Open() are not
// watched; a ring that fills up before the reactor drains it loses events,
// which the kernel marks on the page (a line goes to stderr).
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

// Decodes one raw tracepoint record (the event's bytes in the ring,
// starting with the common fields). False if a field lies outside `len`.
bool DecodeSignalSample(const SignalTraceFormat& format, const uint8_t* raw, size_t len,
                        SignalSample* out);

// The layout of one ring-buffer page (sub-buffer) as trace_pipe_raw hands
// it out, from events/header_page: a u64 timestamp, the "commit" word (bytes
// of data, with flags in bits 30-31 saying events were missed before this
// page), then the data.
struct RingPageFormat {
  size_t commit_offset = 8;
  size_t commit_size = 8;
  size_t data_offset = 16;
  size_t page_size = 4096;  // data_offset + the data field's size
};

// Parses the text of events/header_page. False unless timestamp, commit and
// data are described.
bool ParseRingPageFormat(const std::string& text, RingPageFormat* out);

// Decodes the events of one page into samples (their times in the clock of
// the instance, CLOCK_MONOTONIC here). *missed is set when the kernel says
// events were dropped before this page. False if the page is malformed
// (what was decoded before the fault is kept).
bool DecodeRingPage(const RingPageFormat& page_format, const SignalTraceFormat& format,
                    const uint8_t* page, size_t len, std::vector<SignalSample>* out,
                    bool* missed);

// One generation of the tracepoint reader: its filter is fixed when it is
// opened. (ftrace would take a new filter in place, but an event that
// passed neither filter while it changed would be lost; a generation is
// handed over to the next with both recording, see signal_filter.cc.)
class SignalTrace {
 public:
  // Runs in the reactor's dispatch with no lock held, once per drained ring,
  // with the samples in the order that CPU saw them.
  using Handler = std::function<void(const std::vector<SignalSample>&)>;

  // Makes an instance recording the tracepoint with `filter` (ftrace filter
  // syntax, e.g. "sig == 10 && (pid == 1 || pid == 2)"; empty: none),
  // enables it and adds its per-CPU rings to `reactor`. Null with *error:
  // ENOTSUP when the tracepoint is unavailable or not permitted (no
  // tracefs, no privilege), EINVAL when the kernel refuses the filter,
  // another errno (EMFILE, ENOMEM...) for a shortage.
  static std::shared_ptr<SignalTrace> Open(Reactor* reactor, const std::string& filter,
                                           Handler handler, int* error);
  ~SignalTrace();
  SignalTrace(const SignalTrace&) = delete;
  SignalTrace& operator=(const SignalTrace&) = delete;

  // Starts or stops sampling on every CPU.
  int Enable(bool on);

  // Reads every ring that has data now (one poll() over the rings). Only
  // from the reactor's dispatch (a callback, a timer, a catch-up hook): the
  // rings are drained by one thread at a time without a lock. Every
  // Reactor::CatchUp() calls it (see Open).
  void DrainAll();

  // Longest filter string the kernel accepts (a write to the filter file
  // must be shorter than a page, 4 KiB; about 180 "pid == N" terms).
  static constexpr size_t kMaxFilterLength = 4000;

 private:
  struct Cpu;
  struct PassKey {};

 public:
  // For Open() (make_shared needs a public constructor).
  SignalTrace(PassKey, Reactor* reactor, Handler handler, SignalTraceFormat format,
              RingPageFormat page_format, std::string instance_dir);

 private:
  // Reads everything the kernel has written to one CPU's ring.
  void Drain(size_t index);

  Reactor* const reactor_;
  const Handler handler_;
  const SignalTraceFormat format_;
  const RingPageFormat page_format_;
  const std::string instance_dir_;  // removed by the destructor
  std::vector<std::unique_ptr<Cpu>> cpus_;  // fixed after Open()
  uint64_t catch_up_hook_ = 0;  // the reactor's
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_SIGNAL_SIGNAL_TRACE_H_
