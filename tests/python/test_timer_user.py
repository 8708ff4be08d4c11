"""EVFILT_TIMER and EVFILT_USER through the Python API.

Each test probes its filter first and skips if EV_ADD gives EINVAL.
"""

import errno
import time

import pytest

import kqueued
from kqueued import kevent

from kq_helpers import require_filter

TIMER = kqueued.KQ_FILTER_TIMER
USER = kqueued.KQ_FILTER_USER
ADD = kqueued.KQ_EV_ADD
U64 = 2**64 - 1


@pytest.fixture
def tkq(kq):
    require_filter(kq, TIMER)
    return kq


@pytest.fixture
def ukq(kq):
    require_filter(kq, USER)
    return kq


def test_periodic_timer_counts_expirations(tkq):
    tkq.control([kevent(1, TIMER, ADD, 0, 50, 77)], 0)  # 50 ms
    got = tkq.control(None, 4, 2)
    assert len(got) == 1
    e = got[0]
    assert (e.ident, e.filter, e.udata) == (1, TIMER, 77)
    assert e.data >= 1
    assert e.flags & kqueued.KQ_EV_CLEAR  # set automatically
    time.sleep(0.35)
    got = tkq.control(None, 4, 0)
    assert len(got) == 1 and got[0].data >= 3, got
    tkq.control([kevent(1, TIMER, kqueued.KQ_EV_DELETE)], 0)
    time.sleep(0.1)
    assert tkq.control(None, 4, 0) == []


def test_oneshot_timer_fires_once(tkq):
    tkq.control([kevent(2, TIMER, ADD | kqueued.KQ_EV_ONESHOT, 0, 30)], 0)
    got = tkq.control(None, 4, 2)
    assert [(e.ident, e.data) for e in got] == [(2, 1)]
    assert tkq.control(None, 4, 0.15) == []


def test_timer_units(tkq):
    start = time.monotonic()
    tkq.control([kevent(3, TIMER, ADD | kqueued.KQ_EV_ONESHOT,
                        kqueued.KQ_NOTE_USECONDS, 100000)], 0)  # 0.1 s
    got = tkq.control(None, 1, 3)
    took = time.monotonic() - start
    assert len(got) == 1
    assert 0.08 <= took < 2, took


def test_timer_with_zero_period_is_einval(tkq):
    with pytest.raises(OSError) as info:
        tkq.control([kevent(4, TIMER, ADD, 0, 0)], 0)
    assert info.value.errno == errno.EINVAL


def test_user_event_is_triggered_explicitly(ukq):
    ukq.control([kevent(1, USER, ADD | kqueued.KQ_EV_CLEAR, 0, 0, 5)], 0)
    assert ukq.control(None, 1, 0) == []
    ukq.control([kevent(1, USER, 0, kqueued.KQ_NOTE_TRIGGER)], 0)
    got = ukq.control(None, 1, 1)
    assert [(e.ident, e.filter, e.udata) for e in got] == [(1, USER, 5)]
    assert ukq.control(None, 1, 0) == []  # EV_CLEAR


def test_user_fflags_operations(ukq):
    mask = kqueued.KQ_NOTE_FFLAGSMASK
    ukq.control([kevent(1, USER, ADD | kqueued.KQ_EV_CLEAR, kqueued.KQ_NOTE_FFCOPY | 0x0F0)], 0)
    ukq.control([kevent(1, USER, 0, kqueued.KQ_NOTE_FFOR | 0x00F)], 0)
    ukq.control([kevent(1, USER, 0, kqueued.KQ_NOTE_FFAND | 0x0FC)], 0)
    ukq.control([kevent(1, USER, 0, kqueued.KQ_NOTE_TRIGGER)], 0)
    got = ukq.control(None, 1, 1)
    assert len(got) == 1
    assert got[0].fflags & mask == 0x0FC


def test_user_event_bit_exact_round_trip(ukq):
    ident, udata = 0xFEDCBA9876543210, U64
    ukq.control([kevent(ident, USER, ADD | kqueued.KQ_EV_CLEAR, 0, 0, udata)], 0)
    ukq.control([kevent(ident, USER, 0, kqueued.KQ_NOTE_TRIGGER | kqueued.KQ_NOTE_FFCOPY | 0x123)], 0)
    got = ukq.control(None, 2, 1)
    assert len(got) == 1
    e = got[0]
    assert e.ident == ident and e.udata == udata and e.filter == USER
    assert e.fflags & kqueued.KQ_NOTE_FFLAGSMASK == 0x123
    ukq.control([kevent(U64, USER, ADD | kqueued.KQ_EV_ONESHOT,
                        kqueued.KQ_NOTE_TRIGGER, 0, 2**63)], 0)
    got = ukq.control(None, 2, 1)
    assert [(e.ident, e.udata) for e in got] == [(U64, 2**63)]


def test_dispatch_disables_after_retrieval(ukq):
    ukq.control([kevent(6, USER, ADD | kqueued.KQ_EV_DISPATCH | kqueued.KQ_EV_CLEAR)], 0)
    ukq.control([kevent(6, USER, 0, kqueued.KQ_NOTE_TRIGGER)], 0)
    assert len(ukq.control(None, 1, 1)) == 1
    ukq.control([kevent(6, USER, 0, kqueued.KQ_NOTE_TRIGGER)], 0)
    assert ukq.control(None, 1, 0) == []  # disabled
    ukq.control([kevent(6, USER, kqueued.KQ_EV_ENABLE)], 0)
    assert len(ukq.control(None, 1, 1)) == 1


def test_many_events_in_one_call(ukq):
    n = 3000
    ukq.control([kevent(i + 1, USER, ADD | kqueued.KQ_EV_ONESHOT,
                        kqueued.KQ_NOTE_TRIGGER, 0, i) for i in range(n)], 0)
    got = ukq.control(None, n + 10, 1)
    assert len(got) == n
    assert sorted(e.ident for e in got) == list(range(1, n + 1))
    assert all(e.udata == e.ident - 1 for e in got)
