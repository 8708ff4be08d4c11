// SdNotify: systemd's readiness protocol (sd_notify(3)), spoken directly so
// the daemon needs no libsystemd. When $NOTIFY_SOCKET names an AF_UNIX
// datagram socket (a path, or "@name" for the abstract namespace), each
// call sends one datagram of newline-separated assignments such as
// "READY=1\nSTATUS=serving /dev/kqueue". Without $NOTIFY_SOCKET it does
// nothing: the daemon runs the same with or without systemd.
#ifndef KQUEUED_DAEMON_OS_SD_NOTIFY_H_
#define KQUEUED_DAEMON_OS_SD_NOTIFY_H_

#include <string>

namespace kqd {

// Sends `state` to $NOTIFY_SOCKET. Returns 0 when sent, 1 when there is no
// $NOTIFY_SOCKET (nothing to do), or an errno (e.g. EINVAL for a malformed
// socket name, ECONNREFUSED when nobody listens).
int SdNotify(const std::string& state);

}  // namespace kqd

#endif  // KQUEUED_DAEMON_OS_SD_NOTIFY_H_
