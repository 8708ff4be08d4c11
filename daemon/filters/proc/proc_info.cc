#include "daemon/filters/proc/proc_info.h"

namespace kqd {

bool MaySignal(const ProcessContext& watcher, const ProcStatus& target) {
  if (watcher.can_kill_any()) return true;
  for (uid_t who : {watcher.ruid(), watcher.euid()}) {
    if (who == target.ruid || who == target.suid) return true;
  }
  return false;
}

}  // namespace kqd
