// EVFILT_SIGNAL: counts signals sent to the registering process without
// taking them away from it.
//
// ident is a signal number, 1..64 (anything else is EINVAL). The knote
// watches the process that registered it (kn.owner->pid(), its whole thread
// group); data is the number of attempts to send that signal to that process
// since the last retrieval, and EV_CLEAR is implied. As on BSD every attempt
// counts, whatever became of the signal: the kernel's "result" (delivered,
// ignored, already pending, queue overflow, info lost) is not looked at, so
// a signal set to SIG_IGN, a blocked one sent while already pending, a
// caught one and one sent to any thread (tgkill to a non-leader) each count
// once. kill(pid, 0) sends nothing and counts nothing. EV_ADD on an existing
// knote keeps its count; a disabled knote keeps counting.
//
// Unlike libkqueue (signalfd, which needs the signal blocked and then
// consumes it), the process's dispositions, masks and handlers are never
// touched: a handler still runs, a default action still happens. Signals
// are observed through the signal:signal_generate tracepoint (see
// signal_trace.h), which needs root. Without it, or without
// tracefs, EV_ADD fails with ENOTSUP (that is, EOPNOTSUPP: the filter exists
// but this system cannot provide it, which EINVAL would hide).
//
// Counting starts when the registration is made: a signal generated before
// the kevent call that adds the knote returns is not counted even if the
// daemon reads it later. Processes only ever see their own signals.
//
// Threads. The knote covers threads created after it, found through
// ProcEvents (fork events of the watched process) or, without the proc
// connector, by rescanning /proc/<pid>/task whenever the tracepoint filter
// is rebuilt. A thread-directed signal to a thread not yet known (the very
// moment after pthread_create) is still counted: such samples pass the
// kernel filter for every watched signal number and the thread's process is
// looked up in /proc.
//
// Limits: a thread that already exited when its thread-directed sample is
// read cannot be attributed; samples lost to a full trace ring are not
// counted (logged); a knote on a kqueue shared across fork keeps watching
// the process that registered it.
//
// Lifetime. The knote is bound to the registering process itself (a pidfd),
// not to its pid: once that process has exited it counts nothing more (its
// count so far stays retrievable through whoever still holds the kqueue),
// so a reused pid — perhaps another user's process — is never watched.
#ifndef KQUEUED_DAEMON_FILTERS_SIGNAL_SIGNAL_FILTER_H_
#define KQUEUED_DAEMON_FILTERS_SIGNAL_SIGNAL_FILTER_H_

#include <memory>

#include "daemon/core/filter_ops.h"
#include "daemon/core/runtime.h"
#include "daemon/filters/proc/proc_events.h"

namespace kqd {

// The highest signal number Linux has (_NSIG - 1).
constexpr int kMaxSignalNumber = 64;

// The filter ops; `runtime` (its reactor) must outlive them. `proc_events`
// may be null (the proc connector is unavailable): threads are then found
// by rescanning /proc.
std::shared_ptr<FilterOps> MakeSignalFilter(Runtime* runtime,
                                            std::shared_ptr<ProcEvents> proc_events);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_SIGNAL_SIGNAL_FILTER_H_
