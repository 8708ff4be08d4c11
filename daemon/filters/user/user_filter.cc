#include "daemon/filters/user/user_filter.h"

namespace kqd {
namespace {

// Whether the last change asked for a trigger that no evaluation has seen
// yet. Once seen, "triggered" is the knote's kActive bit (see the header).
class UserState : public KnoteState {
 public:
  bool trigger_pending = false;
};

// The saved fflags after `change` is applied to `saved`.
uint32_t ApplyFflags(uint32_t saved, uint32_t change) {
  const uint32_t bits = change & NOTE_FFLAGSMASK;
  switch (change & NOTE_FFCTRLMASK) {
    case NOTE_FFAND:
      return saved & bits;
    case NOTE_FFOR:
      return saved | bits;
    case NOTE_FFCOPY:
      return bits;
    default:  // NOTE_FFNOP
      return saved;
  }
}

class UserFilter : public FilterOps {
 public:
  int Attach(Knote& kn) override {
    auto state = std::make_unique<UserState>();
    state->trigger_pending = (kn.sfflags & NOTE_TRIGGER) != 0;
    kn.state = std::move(state);
    // A registration saves its fflags as given, whatever the control bits
    // say (FreeBSD and NetBSD do the same): there is nothing to combine
    // them with yet. kn.sfflags and kn.sdata are the saved value and data.
    kn.sfflags &= NOTE_FFLAGSMASK;
    return 0;
  }

  void Detach(Knote&) override {}  // attached to nothing

  bool Event(Knote& kn, long hint) override {
    if (hint != kHintEvaluate) return false;  // there is no event source
    UserState* st = kn.state_as<UserState>();
    kn.kev.fflags = kn.sfflags;
    kn.kev.data = kn.sdata;
    // kActive set: triggered earlier and not reset by an EV_CLEAR
    // retrieval (this may be that retrieval's own evaluation).
    const bool fire = st->trigger_pending || (kn.status & Knote::kActive);
    st->trigger_pending = false;
    return fire;
  }

  // EV_ADD on an existing knote, or a change without EV_ADD that carries
  // fflags (NOTE_TRIGGER from another thread, typically).
  int Touch(Knote& kn, const kq_kevent& change) override {
    kn.sfflags = ApplyFflags(kn.sfflags, change.fflags);
    kn.sdata = change.data;
    if (change.fflags & NOTE_TRIGGER) kn.state_as<UserState>()->trigger_pending = true;
    return 0;
  }
};

}  // namespace

std::shared_ptr<FilterOps> MakeUserFilter() { return std::make_shared<UserFilter>(); }

}  // namespace kqd
