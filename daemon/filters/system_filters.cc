#include "daemon/filters/system_filters.h"

namespace kqd {

void RegisterSystemFilters(Runtime* runtime) {
  FilterRegistry& r = runtime->filters();
  // Filters without an implementation keep their table entry (the KFILTER
  // ioctls name them) but EV_ADD on them is EINVAL.
  r.AddSystem(EVFILT_READ, "EVFILT_READ", nullptr);
  r.AddSystem(EVFILT_WRITE, "EVFILT_WRITE", nullptr);
  r.AddSystem(EVFILT_AIO, "EVFILT_AIO", nullptr);
  r.AddSystem(EVFILT_VNODE, "EVFILT_VNODE", nullptr);
  r.AddSystem(EVFILT_PROC, "EVFILT_PROC", nullptr);
  r.AddSystem(EVFILT_SIGNAL, "EVFILT_SIGNAL", nullptr);
  r.AddSystem(EVFILT_TIMER, "EVFILT_TIMER", nullptr);
  r.AddSystem(EVFILT_FS, "EVFILT_FS", nullptr);
  r.AddSystem(EVFILT_USER, "EVFILT_USER", nullptr);
  r.AddSystem(EVFILT_EMPTY, "EVFILT_EMPTY", nullptr);
}

}  // namespace kqd
