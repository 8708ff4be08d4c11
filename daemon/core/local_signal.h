// LocalSignal: how a kqueue with a local owner (KQ_IOC_LOCAL_ATTACH, ABI 4)
// tells that process whether it holds knotes the owner cannot collect itself.
// The service implements it with an eventfd the daemon alone holds, added to
// the owner's epoll instance; the core only says "readable" or "not".
#ifndef KQUEUED_DAEMON_CORE_LOCAL_SIGNAL_H_
#define KQUEUED_DAEMON_CORE_LOCAL_SIGNAL_H_

namespace kqd {

class LocalSignal {
 public:
  LocalSignal() = default;
  virtual ~LocalSignal() = default;
  LocalSignal(const LocalSignal&) = delete;
  LocalSignal& operator=(const LocalSignal&) = delete;

  // Makes the signal readable (true) or not (false). Called under the
  // kqueue's lock, only when the wanted state differs from the last one set
  // (a new signal starts not readable); it must neither block nor take a
  // lock. A readable signal must be visible to the owner's epoll_wait by the
  // time this returns.
  virtual void Set(bool readable) = 0;
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_LOCAL_SIGNAL_H_
