"""kqueue objects: life cycle, argument checking, errors, timeouts, signals.

Nothing here needs a filter beyond what the core offers without one (EV_ERROR
for unknown filters); tests that need EVFILT_USER probe for it and skip.
"""

import errno
import fcntl
import math
import os
import signal
import threading
import time

import pytest

import kqueued
from kqueued import kevent, kqueue

from kq_helpers import header_defines, require_filter

U64 = 2**64 - 1
USER = kqueued.KQ_FILTER_USER


# ---- life cycle ---------------------------------------------------------------


def test_open_fileno_close(daemon):
    q = kqueue()
    fd = q.fileno()
    assert isinstance(fd, int) and fd >= 0
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # non-inheritable
    assert not os.get_inheritable(fd)
    assert q.closed is False
    q.close()
    assert q.closed is True
    q.close()  # twice is fine
    with pytest.raises(OSError):  # the descriptor is gone
        os.fstat(fd)
    with pytest.raises(ValueError, match="I/O operation on closed kqueue object"):
        q.fileno()
    with pytest.raises(ValueError, match="I/O operation on closed kqueue object"):
        q.control(None, 0)
    with pytest.raises(ValueError, match="I/O operation on closed kqueue object"):
        q.control([kevent(0)], 1, 0)


def test_context_manager(daemon):
    with kqueue() as q:
        assert isinstance(q, kqueue)
        assert not q.closed
        assert q.control(None, 1, 0) == []
    assert q.closed
    with pytest.raises(ValueError):
        q.__enter__()


def test_takes_no_arguments(daemon):
    with pytest.raises(TypeError):
        kqueue(1)
    with pytest.raises(TypeError):
        kqueue(size=1)


def test_every_kqueue_is_a_new_queue(daemon):
    with kqueue() as a, kqueue() as b:
        assert a.fileno() != b.fileno()
        require_filter(a, USER)
        a.control([kevent(1, USER, kqueued.KQ_EV_ADD)], 0)
        with pytest.raises(FileNotFoundError):
            b.control([kevent(1, USER, kqueued.KQ_EV_DELETE)], 0)
        a.control([kevent(1, USER, kqueued.KQ_EV_DELETE)], 0)


def test_fromfd_takes_ownership_and_shares_the_queue(daemon, kq):
    require_filter(kq, USER)
    other = kqueue.fromfd(os.dup(kq.fileno()))
    try:
        assert isinstance(other, kqueue)
        assert other.fileno() != kq.fileno()
        kq.control([kevent(3, USER, kqueued.KQ_EV_ADD | kqueued.KQ_EV_CLEAR)], 0)
        other.control([kevent(3, USER, 0, kqueued.KQ_NOTE_TRIGGER)], 0)
        got = kq.control(None, 2, 1)
        assert [(e.ident, e.filter) for e in got] == [(3, USER)]
    finally:
        fd = other.fileno()
        other.close()
    with pytest.raises(OSError):  # close() closed the duplicate
        os.fstat(fd)
    assert not kq.closed and kq.control(None, 1, 0) == []
    with pytest.raises(ValueError):
        kqueue.fromfd(-1)
    with pytest.raises(TypeError):
        kqueue.fromfd("3")


def test_version_handshake(daemon, kq):
    abi, version = kqueued.daemon_version(kq)
    # The daemon built from this tree speaks the header's version (so in
    # python_client_test the inline commands of ABI 3 are really used).
    assert abi == header_defines()["KQ_ABI_VERSION"]
    assert version.startswith("kqueued ")
    assert kqueued.daemon_version(kq.fileno()) == (abi, version)


def test_device_from_environment(daemon, monkeypatch, tmp_path):
    monkeypatch.setenv("KQUEUE_DEVICE", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        kqueue()
    # A device that is not a kqueue: the version ioctl is refused.
    monkeypatch.setenv("KQUEUE_DEVICE", "/dev/null")
    with pytest.raises(OSError) as info:
        kqueue()
    assert info.value.errno == errno.ENOTTY
    assert "not a kqueue device" in str(info.value)
    monkeypatch.setenv("KQUEUE_DEVICE", daemon.device)
    kqueue().close()


def test_no_descriptor_leaks_when_open_fails(daemon, monkeypatch):
    monkeypatch.setenv("KQUEUE_DEVICE", "/dev/null")
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(OSError):
            kqueue()
    assert set(os.listdir("/proc/self/fd")) <= before


# ---- argument checking (CPython's order and exceptions) -----------------------


def test_max_events_must_be_a_nonnegative_int(kq):
    with pytest.raises(ValueError, match="Length of eventlist must be 0 or positive, got -1"):
        kq.control(None, -1)
    with pytest.raises(TypeError):
        kq.control(None, 1.0)
    with pytest.raises(TypeError):
        kq.control(None, "1")
    with pytest.raises(OverflowError):
        kq.control(None, 2**31)
    with pytest.raises(TypeError):
        kq.control(None)


def test_timeout_rules(kq):
    for bad in (-1, -0.5, -1e-10, -(2**30)):
        with pytest.raises(ValueError, match="timeout must be positive or None"):
            kq.control(None, 1, bad)
    # CPython turns every conversion failure (NaN, overflow) into TypeError.
    for bad in ("1", b"1", [1], math.nan, 1e300, 2**70, -(2**70), object()):
        with pytest.raises(TypeError, match="timeout argument must be a number or None"):
            kq.control(None, 1, bad)
    # 0, 0.0, a tiny float (rounded up to 1 ns) and ints are all polls here.
    for ok in (0, 0.0, 1e-10, False):
        assert kq.control(None, 1, ok) == []


def test_arguments_are_positional_only(kq):
    with pytest.raises(TypeError):
        kq.control(changelist=None, maxevents=1)
    with pytest.raises(TypeError):
        kq.control(None, 1, timeout=0)


def test_changelist_must_be_an_iterable_of_kevents(kq):
    with pytest.raises(TypeError, match="changelist is not iterable"):
        kq.control(5, 0)
    with pytest.raises(TypeError, match="changelist must be an iterable of"):
        kq.control([1], 0)
    with pytest.raises(TypeError, match="changelist must be an iterable of"):
        kq.control([kevent(0, 4242), "x"], 0)
    # Empty iterables and None are fine.
    assert kq.control([], 1, 0) == []
    assert kq.control((), 1, 0) == []
    assert kq.control(iter([]), 1, 0) == []


def test_validation_happens_before_any_change_is_applied(kq):
    require_filter(kq, USER)
    with pytest.raises(TypeError):
        kq.control([kevent(4, USER, kqueued.KQ_EV_ADD), None], 0)
    with pytest.raises(FileNotFoundError):  # nothing was added
        kq.control([kevent(4, USER, kqueued.KQ_EV_DELETE)], 0)


# ---- errors -------------------------------------------------------------------


def test_failed_change_without_room_raises_oserror(kq):
    with pytest.raises(OSError) as info:
        kq.control([kevent(1, 4242, kqueued.KQ_EV_ADD)], 0)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        kq.control([kevent(1, kqueued.KQ_FILTER_AIO, kqueued.KQ_EV_ADD)], 0, 0)
    assert info.value.errno == errno.EINVAL


def test_delete_of_missing_knote_is_enoent(kq):
    require_filter(kq, USER)
    with pytest.raises(FileNotFoundError) as info:
        kq.control([kevent(77, USER, kqueued.KQ_EV_DELETE)], 0)
    assert info.value.errno == errno.ENOENT


def test_failed_changes_become_ev_error_entries(kq):
    require_filter(kq, USER)
    changes = [kevent(1, USER, kqueued.KQ_EV_DELETE, 0, 0, 7),
               kevent(2, 4242, kqueued.KQ_EV_ADD, 0, 0, 8),
               kevent(3, USER, kqueued.KQ_EV_ADD, 0, 0, 9)]
    got = kq.control(changes, 4, 0)
    assert len(got) == 2
    assert all(isinstance(e, kevent) for e in got)
    assert got[0].flags & kqueued.KQ_EV_ERROR and got[0].data == errno.ENOENT
    assert (got[0].ident, got[0].filter, got[0].udata) == (1, USER, 7)
    assert got[1].flags & kqueued.KQ_EV_ERROR and got[1].data == errno.EINVAL
    assert (got[1].ident, got[1].filter, got[1].udata) == (2, 4242, 8)
    # The change after the failures was applied.
    kq.control([kevent(3, USER, kqueued.KQ_EV_DELETE)], 0)


def test_failure_with_the_eventlist_full_raises(kq):
    # NetBSD: the first failure fills the only slot; the second has no room,
    # so the call fails with its errno.
    with pytest.raises(OSError) as info:
        kq.control([kevent(1, 4242), kevent(2, 4242)], 1, 0)
    assert info.value.errno == errno.EINVAL


def test_ev_error_round_trips_ident_and_udata_bit_exact(kq):
    for ident, udata in [(U64, U64), (2**63, 2**63 + 1), (0, 1), (2**32, 2**64 - 2)]:
        got = kq.control([kevent(ident, 4242, kqueued.KQ_EV_ADD, 5, -3, udata)], 1, 0)
        assert len(got) == 1
        e = got[0]
        assert e.ident == ident and e.udata == udata, (ident, udata)
        assert e.filter == 4242 and e.flags & kqueued.KQ_EV_ERROR
        assert e.data == errno.EINVAL


def test_receipt_answers_every_change(kq):
    require_filter(kq, USER)
    got = kq.control([kevent(1, USER, kqueued.KQ_EV_ADD | kqueued.KQ_EV_RECEIPT, 0, 0, 5),
                      kevent(2, USER, kqueued.KQ_EV_DELETE | kqueued.KQ_EV_RECEIPT)], 4, 0)
    assert [(e.ident, bool(e.flags & kqueued.KQ_EV_ERROR), e.data) for e in got] == [
        (1, True, 0), (2, True, errno.ENOENT)]
    assert got[0].udata == 5


# ---- timeouts -----------------------------------------------------------------


def test_zero_max_events_returns_at_once(kq):
    start = time.monotonic()
    assert kq.control(None, 0) == []  # even with no timeout: nevents == 0
    assert kq.control(None, 0, 5) == []
    assert time.monotonic() - start < 2


def test_zero_timeout_polls_and_short_timeout_expires(kq):
    start = time.monotonic()
    assert kq.control(None, 4, 0) == []
    assert time.monotonic() - start < 1
    start = time.monotonic()
    assert kq.control(None, 4, 0.1) == []
    took = time.monotonic() - start
    assert 0.09 <= took < 3, took
    start = time.monotonic()
    assert kq.control(None, 4, 1) == []  # an int timeout
    took = time.monotonic() - start
    assert 0.95 <= took < 4, took


def test_none_blocks_until_another_thread_triggers(kq):
    require_filter(kq, USER)
    kq.control([kevent(9, USER, kqueued.KQ_EV_ADD | kqueued.KQ_EV_CLEAR, 0, 0, 99)], 0)

    def trigger():
        time.sleep(0.3)
        kq.control([kevent(9, USER, 0, kqueued.KQ_NOTE_TRIGGER)], 0)

    t = threading.Thread(target=trigger)
    start = time.monotonic()
    t.start()
    got = kq.control(None, 1)  # the GIL is released while waiting
    took = time.monotonic() - start
    t.join()
    assert len(got) == 1 and got[0].ident == 9 and got[0].udata == 99
    assert took >= 0.25, took


# ---- signals (PEP 475) --------------------------------------------------------


class _Alarm(object):
    def __init__(self, handler):
        self.handler = handler

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self.handler)
        return self

    def arm(self, seconds):
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)


# Room for 1, 64 and 409 events: the three ways control() makes its ioctl
# (inline through fcntl.ioctl, inline through ctypes, KQ_IOC_KEVENT).
ROOMS = [1, 64, 409]


@pytest.mark.parametrize("room", ROOMS)
def test_signal_retries_with_the_remaining_timeout(kq, room):
    calls = []
    with _Alarm(lambda *a: calls.append(time.monotonic())) as alarm:
        start = time.monotonic()
        alarm.arm(0.2)
        got = kq.control(None, room, 1.0)
        took = time.monotonic() - start
    assert got == []
    assert len(calls) == 1
    assert calls[0] - start < 0.9  # the handler ran while we waited
    assert 0.95 <= took < 3, took  # then the wait went on to the deadline


@pytest.mark.parametrize("room", ROOMS)
def test_signal_handler_exception_propagates(kq, room):
    class Boom(Exception):
        pass

    def handler(*a):
        raise Boom()

    with _Alarm(handler) as alarm:
        start = time.monotonic()
        alarm.arm(0.2)
        with pytest.raises(Boom):
            kq.control(None, room)  # would wait forever
        assert time.monotonic() - start < 3


@pytest.mark.parametrize("room", ROOMS)
def test_changes_are_not_applied_twice_after_a_signal(kq, room):
    # The retry after EINTR must not apply the changelist again: a second
    # EV_DELETE would fail with ENOENT and come back as an EV_ERROR entry.
    require_filter(kq, USER)
    kq.control([kevent(21, USER, kqueued.KQ_EV_ADD)], 0)
    with _Alarm(lambda *a: None) as alarm:
        alarm.arm(0.2)
        got = kq.control([kevent(21, USER, kqueued.KQ_EV_DELETE)], room, 0.8)
    assert got == []
    with pytest.raises(FileNotFoundError):
        kq.control([kevent(21, USER, kqueued.KQ_EV_DELETE)], 0)


# ---- nesting ------------------------------------------------------------------


def test_a_kqueue_watches_another_kqueue(daemon):
    outer, inner = kqueue(), kqueue()
    try:
        outer.control([kevent(inner.fileno(), kqueued.KQ_FILTER_READ,
                              kqueued.KQ_EV_ADD)], 0)
        assert outer.control(None, 1, 0) == []
        inner.control([kevent(7, kqueued.KQ_FILTER_USER,
                              kqueued.KQ_EV_ADD, kqueued.KQ_NOTE_TRIGGER)], 0)
        got = outer.control(None, 1, 2)
        assert len(got) == 1
        assert got[0].ident == inner.fileno() and got[0].data == 1
        with pytest.raises(OSError) as e:
            inner.control([kevent(outer.fileno(), kqueued.KQ_FILTER_READ,
                                  kqueued.KQ_EV_ADD)], 0)
        assert e.value.errno == errno.ELOOP
    finally:
        outer.close()
        inner.close()
