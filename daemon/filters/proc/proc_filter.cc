#include "daemon/filters/proc/proc_filter.h"

#include <errno.h>

#include <memory>
#include <utility>

#include "daemon/core/kqueue.h"
#include "daemon/filters/proc/proc_tracker.h"

namespace kqd {
namespace {

using proc::FlagsOf;
using proc::HintKind;
using proc::KindOf;
using proc::kTrackErr;
using proc::MakeHint;
using proc::ProcKnoteState;
using proc::ProcTracker;
using proc::ValueOf;

// ---- The filter -------------------------------------------------------------------

class ProcFilter : public FilterOps {
 public:
  explicit ProcFilter(std::shared_ptr<ProcTracker> tracker) : tracker_(std::move(tracker)) {}

  int Attach(Knote& kn) override {
    // EV_FLAG1: a child's knote registered by NOTE_TRACK (NetBSD's marker).
    // It is internal: cleared before anything is reported.
    const bool tracked_child = kn.kev.flags & EV_FLAG1;
    kn.kev.flags &= ~EV_FLAG1;
    auto st = std::make_unique<ProcKnoteState>();
    if (int err = tracker_->Attach(kn, tracked_child, st.get())) return err;
    if (tracked_child) {
      kn.kev.fflags = NOTE_CHILD;
      kn.kev.data = kn.sdata;  // the parent's pid
    }
    kn.state = std::move(st);
    return 0;
  }

  void Detach(Knote& kn) override { tracker_->Detach(kn, kn.state_as<ProcKnoteState>()); }

  // The evaluation at collection is where an exit held back behind
  // NOTE_CHILD is released (see Event): never skip it.
  bool FreshEvaluationSuffices() const override { return false; }

  bool Event(Knote& kn, long hint) override {
    ProcKnoteState* st = kn.state_as<ProcKnoteState>();
    if (hint == kHintEvaluate) {
      // The core evaluates a knote just before it is retrieved. An exit held
      // back behind an unretrieved NOTE_CHILD must be reported once that is
      // retrieved: post a notification that finds out, after this
      // collection, whether it was (if not, the next evaluation posts again).
      if (st->exit_deferred && (kn.kev.fflags & NOTE_CHILD) && !st->post_pending) {
        st->post_pending = true;
        std::weak_ptr<Knote> weak = kn.weak_from_this();
        tracker_->reactor().Post(
            [weak] { Knote::Notify(weak, MakeHint(HintKind::kDeferredExit)); });
      }
      return Pending(kn);
    }
    switch (KindOf(hint)) {
      case HintKind::kFork:
        if (kn.sfflags & NOTE_FORK) kn.kev.fflags |= NOTE_FORK;
        // Reported whether asked for or not: the caller must learn that a
        // child escaped tracking.
        if (FlagsOf(hint) & kTrackErr) kn.kev.fflags |= NOTE_TRACKERR;
        break;
      case HintKind::kExec:
        if (kn.sfflags & NOTE_EXEC) kn.kev.fflags |= NOTE_EXEC;
        break;
      case HintKind::kExit:
        if (st->exited) break;
        st->exited = true;
        st->status = static_cast<int>(ValueOf(hint));
        // NOTE_CHILD uses data for the parent's pid, NOTE_EXIT for the
        // status: never one event (FreeBSD PR 180385).
        if (kn.kev.fflags & NOTE_CHILD) {
          st->exit_deferred = true;
        } else {
          ReportExit(kn, st);
        }
        break;
      case HintKind::kDeferredExit:
        st->post_pending = false;
        if (st->exit_deferred && !(kn.kev.fflags & NOTE_CHILD)) {
          st->exit_deferred = false;
          ReportExit(kn, st);
        }
        break;
    }
    return Pending(kn);
  }

  // EV_ADD on an existing knote saves the new fflags, data and udata (the
  // core's rule); changes without EV_ADD (enable, disable) change nothing.
  int Touch(Knote& kn, const kq_kevent& change) override {
    if (!(change.flags & EV_ADD)) return 0;
    ProcKnoteState* st = kn.state_as<ProcKnoteState>();
    // NOTE_TRACK found a knote for the child's pid already there. If it
    // still awaits retrieval of an exit, it is an earlier process's (the
    // pid was reused): the new child cannot be tracked (NOTE_TRACKERR).
    // Otherwise NetBSD's rule: the registration is updated.
    if ((change.flags & EV_FLAG1) && st->exited) return EBUSY;
    kn.sfflags = change.fflags;
    kn.sdata = change.data;
    tracker_->Update(kn, st, change.fflags, change.udata);
    return 0;
  }

  uint32_t ImpliedFlags() const override { return EV_CLEAR; }

 private:
  static bool Pending(const Knote& kn) {
    return kn.kev.fflags != 0 || (kn.kev.flags & EV_EOF);
  }

  // The process is gone: the knote reports it once and is deleted.
  static void ReportExit(Knote& kn, ProcKnoteState* st) {
    kn.kev.flags |= EV_EOF | EV_ONESHOT;
    if (kn.sfflags & NOTE_EXIT) kn.kev.fflags |= NOTE_EXIT;
    kn.kev.data = st->status;
  }

  std::shared_ptr<ProcTracker> tracker_;
};

}  // namespace

std::shared_ptr<FilterOps> MakeProcFilter(Runtime* runtime, std::shared_ptr<ProcEvents> events) {
  auto tracker = std::make_shared<ProcTracker>(runtime, std::move(events));
  tracker->Start();
  return std::make_shared<ProcFilter>(std::move(tracker));
}

}  // namespace kqd
