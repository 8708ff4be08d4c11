#include "daemon/filters/system_filters.h"

#include "daemon/filters/fd_filter.h"
#include "daemon/filters/fs_filter.h"
#include "daemon/filters/timer_filter.h"
#include "daemon/filters/user_filter.h"
#include "daemon/filters/vnode_filter.h"

namespace kqd {

void RegisterSystemFilters(Runtime* runtime) {
  FilterRegistry& r = runtime->filters();
  // Filters without an implementation keep their table entry (the KFILTER
  // ioctls name them) but EV_ADD on them is EINVAL.
  r.AddSystem(EVFILT_READ, "EVFILT_READ", MakeFdFilter(runtime, EVFILT_READ));
  r.AddSystem(EVFILT_WRITE, "EVFILT_WRITE", MakeFdFilter(runtime, EVFILT_WRITE));
  r.AddSystem(EVFILT_AIO, "EVFILT_AIO", nullptr);
  r.AddSystem(EVFILT_VNODE, "EVFILT_VNODE", MakeVnodeFilter(runtime));
  r.AddSystem(EVFILT_PROC, "EVFILT_PROC", nullptr);
  r.AddSystem(EVFILT_SIGNAL, "EVFILT_SIGNAL", nullptr);
  r.AddSystem(EVFILT_TIMER, "EVFILT_TIMER", MakeTimerFilter(runtime));
  r.AddSystem(EVFILT_FS, "EVFILT_FS", MakeFsFilter(runtime));
  r.AddSystem(EVFILT_USER, "EVFILT_USER", MakeUserFilter());
  r.AddSystem(EVFILT_EMPTY, "EVFILT_EMPTY", nullptr);
}

}  // namespace kqd
