// EVFILT_NETDEV: network interface link state, as a kqueued plug-in.
//
// FreeBSD once had this filter; the names and note values are its:
//   ident   interface index (if_nametoindex)
//   fflags  NOTE_LINKUP 0x1 (carrier came up: IFF_RUNNING set),
//           NOTE_LINKDOWN 0x2 (carrier lost), NOTE_LINKINV 0x4 (the
//           interface is gone: EV_EOF is set too)
//   data    the interface's current flags (IFF_*)
// EV_CLEAR is implied: each event reports the transitions since the last
// retrieval. ENXIO for an index that names no interface.
//
// Mechanism: one rtnetlink socket (RTMGRP_LINK) on the daemon's reactor. The
// daemon's network namespace is the one watched.
#ifndef KQUEUED_PLUGINS_NETDEV_NETDEV_FILTER_H_
#define KQUEUED_PLUGINS_NETDEV_NETDEV_FILTER_H_

#include <cstdint>

#define NOTE_LINKUP 0x0001U
#define NOTE_LINKDOWN 0x0002U
#define NOTE_LINKINV 0x0004U

#define NETDEV_FILTER_NAME "EVFILT_NETDEV"

#endif  // KQUEUED_PLUGINS_NETDEV_NETDEV_FILTER_H_
