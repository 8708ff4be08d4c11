"""Which ioctl kqueue.control() sends, and the inline kevent's argument.

control() sends KQ_IOC_KEVENT_INLINE_<capacity> (ABI 3: the records inside
the ioctl's argument) with the smallest capacity that holds
max(len(changelist), max_events), and KQ_IOC_KEVENT (the records by address)
beyond 408 records, to a daemon of ABI 2, or with KQUEUE_INLINE=0. The whole
suite runs in both modes (BUILD: python_client_pointer_test sets
KQUEUE_INLINE=0); the tests here check the choice made in this run's mode, and
what only the inline path can get wrong: the packing, events written over the
changes, fcntl.ioctl's copy back, parked calls ended by close or daemon stop.
"""

import errno
import fcntl
import os
import signal
import struct
import termios
import threading
import time

import pytest

import kqueued
from kqueued import _abi, kevent

from kq_helpers import header_defines, require_filter

USER = kqueued.KQ_FILTER_USER
ADD = kqueued.KQ_EV_ADD
DELETE = kqueued.KQ_EV_DELETE
TRIGGER = kqueued.KQ_NOTE_TRIGGER
U64 = 2**64 - 1

CAPACITIES = (1, 8, 64, 408)
REQUEST_OF = {1: 0xC0486B50, 8: 0xC1606B51, 64: 0xCA206B52, 408: 0xFFE06B53}


def _pointer_mode():
    return os.environ.get("KQUEUE_INLINE") == "0"


def _expected_request(abi, nchanges, nevents):
    """The request control() must send, worked out here independently."""
    if abi < 3 or _pointer_mode():
        return _abi.KQ_IOC_KEVENT
    need = max(nchanges, nevents)
    for cap in CAPACITIES:
        if need <= cap:
            return REQUEST_OF[cap]
    return _abi.KQ_IOC_KEVENT


class _FcntlRecorder(object):
    """Stands in for the fcntl module inside kqueued: notes every ioctl
    request, then makes the real call."""

    def __init__(self, requests):
        self.requests = requests

    def ioctl(self, fd, request, arg=0, mutate_flag=True):
        self.requests.append(request)
        return fcntl.ioctl(fd, request, arg, mutate_flag)


@pytest.fixture
def ioctls(monkeypatch):
    """The list of ioctl requests kqueued sends during the test (through
    fcntl.ioctl or, for large inline arguments, through ctypes)."""
    requests = []
    monkeypatch.setattr(kqueued, "_fcntl", _FcntlRecorder(requests))
    real = kqueued._ioctl_releasing_gil

    def releasing_gil(fd, request, buf):
        requests.append(request)
        return real(fd, request, buf)

    monkeypatch.setattr(kqueued, "_ioctl_releasing_gil", releasing_gil)
    return requests


@pytest.fixture
def ukq(kq):
    require_filter(kq, USER)
    return kq


# ---- No daemon ---------------------------------------------------------------


@pytest.mark.parametrize("nchanges,nevents,capacity", [
    (0, 0, 1), (1, 0, 1), (0, 1, 1), (1, 1, 1),
    (2, 0, 8), (0, 2, 8), (8, 8, 8), (8, 1, 8),
    (9, 0, 64), (3, 9, 64), (64, 64, 64),
    (65, 0, 408), (1, 65, 408), (408, 408, 408), (0, 408, 408),
])
def test_smallest_capacity_holding_changes_and_events(nchanges, nevents,
                                                      capacity):
    assert kqueued._inline_request(nchanges, nevents) == (
        capacity, REQUEST_OF[capacity])


@pytest.mark.parametrize("nchanges,nevents", [
    (409, 0), (0, 409), (409, 409), (1, 3000), (2**31 - 1, 0)])
def test_beyond_the_largest_capacity_there_is_none(nchanges, nevents):
    assert kqueued._inline_request(nchanges, nevents) is None


def test_request_numbers_carry_the_capacity():
    assert _abi.KQ_KEVENT_INLINE_REQUESTS == tuple(
        (cap, REQUEST_OF[cap]) for cap in CAPACITIES)
    for nr, cap in zip(range(0x50, 0x54), CAPACITIES):
        request = REQUEST_OF[cap]
        assert request >> 30 == 3              # _IOC_READ | _IOC_WRITE
        assert (request >> 8) & 0xFF == ord("k")
        assert request & 0xFF == nr
        size = (request >> 16) & 0x3FFF
        assert size == 32 + cap * 40 <= 16383  # FUSE's restricted ioctl limit


def test_header_defines_the_same_inline_commands():
    defines = header_defines()
    if defines.get("KQ_ABI_VERSION", 0) < 3:
        pytest.skip("proto/kqueue_abi.h predates ABI 3")
    for cap in CAPACITIES:
        assert defines["KQ_IOC_KEVENT_INLINE_%d" % cap] == REQUEST_OF[cap]
        assert defines["KQ_KEVENT_INLINE_CAP_%d" % cap] == cap


def test_struct_formats_are_the_ctypes_records():
    rec = _abi.KqKevent(ident=U64 - 1, filter=0xFFFFFFFE, flags=0x8001,
                        fflags=0x80000003, reserved=0, data=-(2**63) + 5,
                        udata=2**63 + 7)
    assert bytes(rec) == _abi.KEVENT_STRUCT.pack(
        U64 - 1, 0xFFFFFFFE, 0x8001, 0x80000003, 0, -(2**63) + 5, 2**63 + 7)
    hdr = _abi.KqKeventInline(nchanges=408, nevents=7, flags=3, kq_fd=-1,
                              timeout_sec=2**40, timeout_nsec=999999999)
    assert bytes(hdr) == _abi.KEVENT_INLINE_STRUCT.pack(
        408, 7, 3, -1, 2**40, 999999999)


@pytest.mark.parametrize("size", [4, 72, 352, 1024, 1025, 2592, 16352])
def test_fcntl_ioctl_writes_back_into_a_bytearray(size):
    # The inline path relies on fcntl.ioctl(fd, req, bytearray, True)
    # returning the ioctl's value and leaving the answer in the bytearray:
    # CPython copies through a local buffer up to 1024 bytes and passes the
    # bytearray itself beyond. FIONREAD writes an int at the start.
    r, w = os.pipe()
    try:
        os.write(w, b"x" * 5)
        buf = bytearray(b"\xa5" * size)
        assert fcntl.ioctl(r, termios.FIONREAD, buf, True) == 0
        assert struct.unpack_from("i", buf)[0] == 5
        assert buf[4:] == b"\xa5" * (size - 4)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("size", [4, 1025, 2592, 16352])
def test_the_ctypes_ioctl_writes_back_and_raises_like_fcntl(size):
    # The route of capacities 64 and 408 (over 1024 bytes).
    r, w = os.pipe()
    try:
        os.write(w, b"x" * 7)
        buf = bytearray(b"\xa5" * size)
        assert kqueued._ioctl_releasing_gil(r, termios.FIONREAD, buf) == 0
        assert struct.unpack_from("i", buf)[0] == 7
        assert buf[4:] == b"\xa5" * (size - 4)
        with pytest.raises(OSError) as info:  # not a terminal
            kqueued._ioctl_releasing_gil(r, termios.TIOCGWINSZ, buf)
        assert info.value.errno == errno.ENOTTY
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(OSError) as info:
        kqueued._ioctl_releasing_gil(r, termios.FIONREAD, buf)
    assert type(info.value) is OSError and info.value.errno == errno.EBADF


# ---- Against the daemon --------------------------------------------------------


@pytest.mark.parametrize("nchanges,nevents", [
    (0, 0), (0, 1), (1, 1), (2, 0), (0, 8), (9, 0), (0, 64), (65, 3),
    (0, 408), (408, 0), (0, 409), (409, 0), (1, 5000)])
def test_this_run_sends_the_expected_request(ukq, ioctls, nchanges, nevents):
    abi = kqueued.daemon_version(ukq)[0]
    changes = [kevent(i + 1, USER, ADD) for i in range(nchanges)]
    del ioctls[:]
    assert ukq.control(changes, nevents, 0) == []
    assert ioctls == [_expected_request(abi, nchanges, nevents)]


@pytest.mark.parametrize("n", [1, 8, 9, 64, 65, 408, 409])
def test_events_come_back_over_the_changes(ukq, n):
    # n triggers and room for n events: with the inline path, one array of
    # the capacity holding n carries both (copied back through CPython's
    # local buffer for 1 and 8, in place from 64 on).
    ukq.control([kevent(i, USER, ADD | kqueued.KQ_EV_CLEAR, 0, 0, U64 - i)
                 for i in range(n)], 0)
    triggers = [kevent(i, USER, 0, TRIGGER | kqueued.KQ_NOTE_FFCOPY | i)
                for i in range(n)]
    got = ukq.control(triggers, n, 0)
    assert sorted(e.ident for e in got) == list(range(n))
    for e in got:
        assert e.filter == USER
        assert e.udata == U64 - e.ident
        assert e.fflags & kqueued.KQ_NOTE_FFLAGSMASK == e.ident
        assert e.data == 0
    assert ukq.control(None, n, 0) == []  # EV_CLEAR: reported once


def test_more_events_than_changes_and_the_reverse(ukq):
    ONESHOT = kqueued.KQ_EV_ONESHOT
    ukq.control([kevent(i, USER, ADD | ONESHOT, TRIGGER) for i in range(50)],
                0)
    # One change, room for 50: capacity 64.
    got = ukq.control([kevent(99, USER, ADD)], 50, 0)
    assert sorted(e.ident for e in got) == list(range(50))
    # 60 changes, room for 1: capacity 64 again.
    changes = [kevent(99, USER, DELETE)] + [
        kevent(1000 + i, USER, ADD | ONESHOT, TRIGGER) for i in range(59)]
    first = ukq.control(changes, 1, 0)
    assert len(first) == 1
    rest = ukq.control(None, 64, 0)
    assert sorted(e.ident for e in first + rest) == list(range(1000, 1059))


def test_ev_error_entries_are_written_over_the_changes(ukq):
    changes = [
        kevent(1, USER, DELETE, 0, 0, 11),                     # ENOENT
        kevent(2, USER, ADD | kqueued.KQ_EV_RECEIPT, 0, 0, 12),  # receipt 0
        kevent(3, USER, DELETE, 0, 0, 13),                     # ENOENT
        kevent(4, USER, ADD, TRIGGER, 0, 14),                  # applied
    ]
    got = ukq.control(changes, 8, 0)
    assert [(e.ident, e.flags, e.data, e.udata) for e in got] == [
        (1, kqueued.KQ_EV_ERROR, errno.ENOENT, 11),
        (2, kqueued.KQ_EV_ERROR, 0, 12),
        (3, kqueued.KQ_EV_ERROR, errno.ENOENT, 13),
    ]
    # The last change was applied even though its slot was overwritten.
    got = ukq.control(None, 8, 0)
    assert [(e.ident, e.udata) for e in got] == [(4, 14)]


def test_fromfd_asks_the_daemon_version_once(kq, ioctls):
    abi = kqueued.daemon_version(kq)[0]
    q = kqueued.kqueue.fromfd(os.dup(kq.fileno()))
    try:
        del ioctls[:]
        q.control(None, 1, 0)
        q.control(None, 8, 0)
    finally:
        q.close()
    expected = [_expected_request(abi, 0, 1), _expected_request(abi, 0, 8)]
    if not _pointer_mode():
        expected.insert(0, _abi.KQ_IOC_VERSION)
    assert ioctls == expected


def test_kqueue_inline_0_forces_the_pointer_request(daemon, monkeypatch,
                                                    ioctls):
    with kqueued.kqueue() as q:
        abi = kqueued.daemon_version(q)[0]
    monkeypatch.setenv("KQUEUE_INLINE", "0")
    with kqueued.kqueue() as off:
        monkeypatch.setenv("KQUEUE_INLINE", "1")
        with kqueued.kqueue() as on:
            del ioctls[:]
            off.control(None, 1, 0)
            on.control(None, 1, 0)
    expected = _abi.KQ_IOC_KEVENT if abi < 3 else REQUEST_OF[1]
    assert ioctls == [_abi.KQ_IOC_KEVENT, expected]


def test_an_abi_2_daemon_gets_the_pointer_request(daemon, monkeypatch, ioctls):
    real = kqueued._query_version
    monkeypatch.setattr(kqueued, "_query_version",
                        lambda fd: (2, real(fd)[1]))
    monkeypatch.delenv("KQUEUE_INLINE", raising=False)
    with kqueued.kqueue() as q:
        require_filter(q, USER)
        del ioctls[:]
        got = q.control([kevent(5, USER, ADD, TRIGGER, 0, 55)], 1, 0)
        assert [(e.ident, e.udata) for e in got] == [(5, 55)]
        q.control(None, 64, 0)
        assert ioctls == [_abi.KQ_IOC_KEVENT] * 2
    # And ABI 1 is refused, as before.
    monkeypatch.setattr(kqueued, "_query_version",
                        lambda fd: (1, real(fd)[1]))
    with pytest.raises(OSError) as info:
        kqueued.kqueue()
    assert info.value.errno == errno.EPROTONOSUPPORT


def _control_in_a_thread(q, *args):
    """Starts q.control(*args) in a thread; the returned dict gets 'result'
    or 'error', and 'thread'."""
    out = {}

    def run():
        try:
            out["result"] = q.control(*args)
        except BaseException as e:  # noqa: B902 — reported to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    out["thread"] = t
    t.start()
    return out


@pytest.mark.parametrize("nevents", [1, 8, 64, 408, 409])
def test_parked_call_answered_by_an_event_from_another_thread(ukq, nevents):
    # The waiting thread must let the others run (the GIL released) with
    # every capacity: fcntl.ioctl keeps it for arguments over 1024 bytes,
    # so 64 and 408 go through ctypes.
    ukq.control([kevent(8, USER, ADD | kqueued.KQ_EV_CLEAR, 0, 0, 88)], 0)
    call = _control_in_a_thread(ukq, None, nevents, 10)
    time.sleep(0.2)
    assert call["thread"].is_alive(), call  # parked
    ukq.control([kevent(8, USER, 0, TRIGGER)], 0)
    call["thread"].join(5)
    assert not call["thread"].is_alive()
    assert "error" not in call, call.get("error")
    assert [(e.ident, e.udata) for e in call["result"]] == [(8, 88)]


def test_parked_call_ends_with_ebadf_when_its_descriptor_closes(daemon):
    q = kqueued.kqueue()
    call = _control_in_a_thread(q, None, 8, 10)
    time.sleep(0.2)
    assert call["thread"].is_alive(), call  # parked
    start = time.monotonic()
    q.close()
    call["thread"].join(5)
    assert not call["thread"].is_alive()
    assert time.monotonic() - start < 3
    assert isinstance(call.get("error"), OSError), call
    assert call["error"].errno == errno.EBADF


def test_parked_call_ends_with_enotconn_when_the_daemon_stops(
        private_daemon, monkeypatch):
    d = private_daemon()
    monkeypatch.setenv(_abi.KQ_DEVICE_ENV, d.device)
    q = kqueued.kqueue()
    try:
        call = _control_in_a_thread(q, None, 8, 10)
        time.sleep(0.2)
        assert call["thread"].is_alive(), call  # parked
        start = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        call["thread"].join(5)
        assert not call["thread"].is_alive()
        assert time.monotonic() - start < 5
        assert isinstance(call.get("error"), OSError), call
        assert call["error"].errno == errno.ENOTCONN
    finally:
        q.close()
