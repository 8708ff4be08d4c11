#include "daemon/filters/proc/proc_info.h"

namespace kqd {

bool MaySignal(const ProcessContext& watcher, const ProcStatus& target) {
  if (watcher.can_kill_any()) return true;
  for (uid_t who : {watcher.ruid(), watcher.euid()}) {
    if (who == target.ruid || who == target.suid) return true;
  }
  return false;
}

bool IsSetId(const ProcStatus& c) {
  return c.euid != c.ruid || c.suid != c.ruid || c.egid != c.rgid || c.sgid != c.rgid;
}

bool MayTrack(const ProcStatus& forker, const ProcStatus& child) {
  if (forker.euid == 0) return true;
  return forker.ruid == child.ruid && !IsSetId(child);
}

}  // namespace kqd
