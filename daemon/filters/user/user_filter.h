// EVFILT_USER: events the application raises itself (FreeBSD's, in NetBSD
// since 10).
//
// ident is any number. The low 24 bits of fflags (NOTE_FFLAGSMASK) are a
// value saved with the knote: a registration saves them as given, and each
// later change updates them as its NOTE_FFCTRLMASK bits say — NOTE_FFNOP
// keeps, NOTE_FFAND ands, NOTE_FFOR ors, NOTE_FFCOPY replaces. The change's
// data is saved too. NOTE_TRIGGER in a change (with or without EV_ADD)
// triggers the event, reported with fflags = the saved bits and data = the
// saved data.
//
// A triggered knote stays triggered (reported at every collection, like a
// level) unless it has EV_CLEAR, which resets it after each retrieval.
// The filter keeps that state in the knote's Knote::kActive bit, which the
// core already clears after an EV_CLEAR retrieval and keeps otherwise.
//
// A trigger sent without EV_ADD while the knote is disabled (EV_DISPATCH
// after a retrieval, or EV_DISABLE) is remembered: EV_ENABLE reports it.
// One sent with EV_ADD to a disabled knote is only seen at the knote's next
// evaluation (the core does not evaluate a disabled knote on EV_ADD unless
// EV_ENABLE comes with it).
//
// Changes without EV_ADD leave udata as it was registered.
#ifndef KQUEUED_DAEMON_FILTERS_USER_USER_FILTER_H_
#define KQUEUED_DAEMON_FILTERS_USER_USER_FILTER_H_

#include <memory>

#include "daemon/core/filter_ops.h"

namespace kqd {

std::shared_ptr<FilterOps> MakeUserFilter();

}  // namespace kqd

#endif  // KQUEUED_DAEMON_FILTERS_USER_USER_FILTER_H_
