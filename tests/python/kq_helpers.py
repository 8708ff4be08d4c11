"""Helpers shared by the tests: feature probes that skip with a clear reason."""

import errno
import os
import re

import pytest

import kqueued
from kqueued import kevent

FILTER_NAMES = {
    kqueued.KQ_FILTER_READ: "EVFILT_READ",
    kqueued.KQ_FILTER_WRITE: "EVFILT_WRITE",
    kqueued.KQ_FILTER_AIO: "EVFILT_AIO",
    kqueued.KQ_FILTER_VNODE: "EVFILT_VNODE",
    kqueued.KQ_FILTER_PROC: "EVFILT_PROC",
    kqueued.KQ_FILTER_SIGNAL: "EVFILT_SIGNAL",
    kqueued.KQ_FILTER_TIMER: "EVFILT_TIMER",
    kqueued.KQ_FILTER_FS: "EVFILT_FS",
    kqueued.KQ_FILTER_USER: "EVFILT_USER",
    kqueued.KQ_FILTER_EMPTY: "EVFILT_EMPTY",
}


def _probe_ident(filt, resources):
    """An ident EV_ADD can succeed with for this filter, if it is implemented."""
    if filt == kqueued.KQ_FILTER_EMPTY:  # sockets only, as on BSD
        import socket
        a, b = socket.socketpair()
        resources += [a.detach(), b.detach()]
        return resources[-2], 0, 0
    if filt in (kqueued.KQ_FILTER_READ, kqueued.KQ_FILTER_WRITE):
        r, w = os.pipe()
        resources += [r, w]
        return (w if filt == kqueued.KQ_FILTER_WRITE else r), 0, 0
    if filt == kqueued.KQ_FILTER_VNODE:
        fd = os.open("/", os.O_RDONLY | os.O_CLOEXEC)
        resources.append(fd)
        return fd, kqueued.KQ_NOTE_WRITE, 0
    if filt == kqueued.KQ_FILTER_PROC:
        return os.getpid(), kqueued.KQ_NOTE_EXIT, 0
    if filt == kqueued.KQ_FILTER_SIGNAL:
        import signal
        return int(signal.SIGURG), 0, 0
    if filt == kqueued.KQ_FILTER_TIMER:
        return 0x7eadbeef, 0, 60000  # one minute: never fires during a probe
    return 0x7eadbeef, 0, 0


def filter_unsupported(kq, filt):
    """None if the daemon implements `filt`, else why not (for a skip)."""
    resources = []
    try:
        ident, fflags, data = _probe_ident(filt, resources)
        try:
            kq.control([kevent(ident, filt, kqueued.KQ_EV_ADD, fflags, data)], 0, 0)
        except OSError as e:
            if e.errno == errno.EINVAL:
                return ("the daemon does not implement %s yet (EV_ADD gives EINVAL)"
                        % FILTER_NAMES.get(filt, filt))
            raise
        kq.control([kevent(ident, filt, kqueued.KQ_EV_DELETE)], 0, 0)
        return None
    finally:
        for fd in resources:
            os.close(fd)


def require_filter(kq, filt):
    reason = filter_unsupported(kq, filt)
    if reason:
        pytest.skip(reason)


def _header_path():
    candidates = []
    srcdir = os.environ.get("TEST_SRCDIR")
    if srcdir:
        ws = os.environ.get("TEST_WORKSPACE", "kqueued")
        candidates.append(os.path.join(srcdir, ws, "proto", "kqueue_abi.h"))
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(here, "..", "..", "proto", "kqueue_abi.h"))
    for c in candidates:
        if os.path.exists(c):
            return c
    pytest.skip("proto/kqueue_abi.h not reachable from here")


def header_defines():
    """{name: value} of proto/kqueue_abi.h's numeric #defines, the ioctl
    requests included (from the number in their comment)."""
    defines = {}
    with open(_header_path()) as f:
        text = f.read().replace("\\\n", " ")  # join continued lines
    for line in text.splitlines():
        m = re.match(r"#define\s+(\w+)\s+(0x[0-9A-Fa-f]+|\d+)[uU]?\b", line)
        if m:
            defines[m.group(1)] = int(m.group(2), 0)
        m = re.match(r"#define\s+(\w+)\s+_IO.*/\*\s*(0x[0-9A-Fa-f]+)\s*\*/", line)
        if m:
            defines[m.group(1)] = int(m.group(2), 16)
    return defines


class Pipe(object):
    """A pipe whose ends are closed at the end of the test."""

    def __init__(self):
        self.r, self.w = os.pipe2(os.O_CLOEXEC)

    def close(self):
        for fd in (self.r, self.w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.r = self.w = -1

    def close_writer(self):
        os.close(self.w)
        self.w = -1
