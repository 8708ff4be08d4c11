// ProcessContext: the process a kevent call comes from, and on whose behalf
// its knotes are evaluated. fd idents name this process's descriptors; the
// daemon implements it with pidfd_getfd, the unit tests with the test's own
// descriptors.
#ifndef KQUEUED_DAEMON_CORE_PROCESS_CONTEXT_H_
#define KQUEUED_DAEMON_CORE_PROCESS_CONTEXT_H_

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <memory>

#include "daemon/core/local_signal.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {

class Kqueue;

class ProcessContext {
 public:
  virtual ~ProcessContext() = default;

  // Thread-group id of the process.
  virtual pid_t pid() const = 0;
  // Whether `other` (another call's context) comes from this very process,
  // by the kernel's process object where the implementation has one: never
  // true for a process that merely took over this one's pid after it exited.
  // The default compares pids (the unit tests' in-process contexts).
  virtual bool SameProcess(const ProcessContext& other) const { return pid() == other.pid(); }
  // Real and effective user ids, from the kernel's view of the caller.
  virtual uid_t ruid() const = 0;
  virtual uid_t euid() const = 0;
  // Whether the process may signal any process (CAP_KILL).
  virtual bool can_kill_any() const = 0;

  // A transient copy (in the daemon) of the process's descriptor `fd`, used
  // for a moment and closed: knotes must not keep the client's file alive.
  // On failure returns an invalid ScopedFd and sets *error (EBADF if the
  // process has no such descriptor, EOPNOTSUPP if it is one of our own
  // kqueues: those are never copied, and the fd filters then ask
  // KqueueForFd).
  virtual ScopedFd DupFd(int fd, int* error) const = 0;

  // DupFd, also filling *st with the copy's statx (at least STATX_TYPE and
  // STATX_INO, AT_STATX_DONT_SYNC: never a request to a FUSE server). An
  // implementation whose DupFd reads that statx for its own check hands it
  // on, so a caller that needs the copy's identity spares a second statx
  // (the fd filters' EV_ADD). The default asks the kernel once more.
  virtual ScopedFd DupFdStat(int fd, struct statx* st, int* error) const {
    ScopedFd copy = DupFd(fd, error);
    if (copy && statx(copy.get(), "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
                      STATX_TYPE | STATX_INO, st) != 0) {
      *error = errno;
      return ScopedFd();
    }
    return copy;
  }

  // The same copy without DupFd's checks (e.g. that `fd` is not our own
  // device): the cheapest way to the file, for a filter that verifies at
  // once that the copy is the open file it registered (by kcmp, before
  // using it in any way that could reach the file's driver).
  virtual ScopedFd CopyFd(int fd, int* error) const { return DupFd(fd, error); }

  // If `fd` is a kqueue served by us, that kqueue (for kqueue nesting).
  virtual std::shared_ptr<Kqueue> KqueueForFd(int fd) const = 0;

  // 0 if this process, with its current credentials, may read the file
  // behind `file` (a descriptor of the daemon's, e.g. a DupFd copy), by the
  // kernel's own permission check; else that check's errno (EACCES). For
  // watching through a descriptor that was opened without read access
  // (O_PATH), which inotify would refuse the process itself.
  virtual int CheckReadAccess(int file) const = 0;

  // The local signal (ABI 4) of a queue whose local owner this process was,
  // handed over when the queue closed, already readable: the owner's epoll
  // instance keeps reporting it, so a library call collecting from it
  // learns of the close without asking on every call. An implementation
  // keeps it while the process lives (bounded; docs/abi.md); the default
  // (the unit tests' contexts) drops it at once.
  virtual void KeepClosedQueueSignal(std::unique_ptr<LocalSignal> signal) const {}
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_PROCESS_CONTEXT_H_
