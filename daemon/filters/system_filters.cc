#include "daemon/filters/system_filters.h"

#include <atomic>
#include <cstdio>
#include <cstring>

#include "daemon/filters/fd/fd_filter.h"
#include "daemon/filters/fs/fs_filter.h"
#include "daemon/filters/proc/proc_events.h"
#include "daemon/filters/proc/proc_filter.h"
#include "daemon/filters/signal/signal_filter.h"
#include "daemon/filters/timer/timer_filter.h"
#include "daemon/filters/user/user_filter.h"
#include "daemon/filters/vnode/vnode_filter.h"

namespace kqd {

void RegisterSystemFilters(Runtime* runtime) {
  FilterRegistry& r = runtime->filters();
  // Filters without an implementation keep their table entry (the KFILTER
  // ioctls name them) but EV_ADD on them is EINVAL.
  r.AddSystem(EVFILT_READ, "EVFILT_READ", MakeFdFilter(runtime, EVFILT_READ));
  r.AddSystem(EVFILT_WRITE, "EVFILT_WRITE", MakeFdFilter(runtime, EVFILT_WRITE));
  r.AddSystem(EVFILT_AIO, "EVFILT_AIO", nullptr);
  r.AddSystem(EVFILT_VNODE, "EVFILT_VNODE", MakeVnodeFilter(runtime));
  // One proc-connector socket for every filter that follows processes
  // (EVFILT_PROC; EVFILT_SIGNAL for new threads). Without it (another user
  // or pid namespace, an old kernel) EVFILT_PROC still works in a degraded
  // mode: exits only, through pidfds; NOTE_FORK/EXEC/TRACK never fire.
  int proc_error = 0;
  std::shared_ptr<ProcEvents> proc_events = ProcEvents::Create(&runtime->reactor(), &proc_error);
  if (!proc_events) {
    // Once per process: unit tests build many runtimes in a sandbox.
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true))
      std::fprintf(stderr,
                   "kqueued: proc connector unavailable (%s): EVFILT_PROC reports exits "
                   "only; NOTE_FORK, NOTE_EXEC and NOTE_TRACK will not fire\n",
                   std::strerror(proc_error));
  }
  r.AddSystem(EVFILT_PROC, "EVFILT_PROC", MakeProcFilter(runtime, proc_events));
  r.AddSystem(EVFILT_SIGNAL, "EVFILT_SIGNAL", MakeSignalFilter(runtime, proc_events));
  r.AddSystem(EVFILT_TIMER, "EVFILT_TIMER", MakeTimerFilter(runtime));
  r.AddSystem(EVFILT_FS, "EVFILT_FS", MakeFsFilter(runtime));
  r.AddSystem(EVFILT_USER, "EVFILT_USER", MakeUserFilter());
  r.AddSystem(EVFILT_EMPTY, "EVFILT_EMPTY", MakeFdFilter(runtime, EVFILT_EMPTY));
}

}  // namespace kqd
