// FilterOps: what a filter is, as in the seed's filterops table: attach,
// detach, event, plus touch for updates. The core knows nothing of any one
// filter; each family lives in its own folder under daemon/filters/.
//
// All hooks run with the owning kqueue's lock held. They must not call back
// into that kqueue's public methods (use Knote::Notify from event sources,
// which runs on another thread or after the lock is dropped).
#ifndef KQUEUED_DAEMON_CORE_FILTER_OPS_H_
#define KQUEUED_DAEMON_CORE_FILTER_OPS_H_

#include "daemon/core/knote.h"
#include "proto/kqueue_abi.h"

namespace kqd {

class FilterOps {
 public:
  virtual ~FilterOps() = default;

  // True if ident is a file descriptor of the registering process.
  virtual bool IsFdFilter() const { return false; }

  // Sets up event sources for a new knote (kn.kev, sfflags, sdata, owner are
  // filled in). Returns 0 or an errno; on error Detach is not called. It
  // may set kn.ops to other ops that serve this knote from then on (the
  // seed's filt_fileattach handing a knote to its file's kqfilter): the
  // core calls every later hook through kn.ops, which must outlive the knote
  // (an ops object that owns them qualifies).
  virtual int Attach(Knote& kn) = 0;

  // Tears down what Attach set up. Event sources may still call
  // Knote::Notify afterwards; it ignores detached knotes.
  virtual void Detach(Knote& kn) = 0;

  // Evaluates the knote: updates kn.kev.data / fflags / flags (EV_EOF) and
  // returns whether the event should be reported. `hint` is kHintEvaluate
  // when the core asks (EV_ADD, collection of a level-triggered knote), or
  // a filter-defined value from its own event source. A filter that finds
  // the knote's fd closed sets Knote::kGone in kn.status and returns false.
  virtual bool Event(Knote& kn, long hint) = 0;

  // A change to an existing knote: EV_ADD, or (FreeBSD and NetBSD 10 style)
  // any change carrying fflags, such as EVFILT_USER's NOTE_TRIGGER. The
  // seed's behaviour (the default): save the new fflags and data, without
  // resetting what already triggered. Returns 0 or an errno.
  virtual int Touch(Knote& kn, const kq_kevent& change) {
    kn.sfflags = change.fflags;
    kn.sdata = change.data;
    return 0;
  }

  // For fd filters: whether kn still watches the file now open at its fd
  // number in the owner. False makes the core drop it silently before a
  // change that names the fd (BSD removes knotes on close).
  virtual bool StillValid(Knote& kn) { return true; }

  // Whether the collection may skip its re-evaluation of a level-triggered
  // knote that an evaluation after the call began found firing (one
  // evaluation per wake). A filter whose kHintEvaluate at collection does
  // more than re-check the condition (EVFILT_PROC's deferred exit) says no.
  virtual bool FreshEvaluationSuffices() const { return true; }

  // Flags the core forces on at registration (EV_CLEAR for PROC, SIGNAL,
  // TIMER).
  virtual uint32_t ImpliedFlags() const { return 0; }

  // The end of a change that named kn (any outcome, lock still held),
  // unless the change detached it (added in plug-in ABI 2). A filter
  // whose hooks hand each other
  // something within one change (the fd filters pass the copy of the
  // client's file StillValid or Attach made to the evaluation or Detach
  // that follows) drops what is left of it here: nothing of one change may
  // outlive it.
  virtual void ChangeDone(Knote& kn) {}
};

}  // namespace kqd

#endif  // KQUEUED_DAEMON_CORE_FILTER_OPS_H_
