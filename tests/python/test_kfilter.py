"""NetBSD's KFILTER_BYNAME / KFILTER_BYFILTER through filter_by_name / filter_name."""

import errno

import pytest

import kqueued
from kqueued import filter_by_name, filter_name, kevent

from kq_helpers import FILTER_NAMES


def test_every_system_filter_both_ways(kq):
    assert len(FILTER_NAMES) == kqueued.KQ_FILTER_SYSCOUNT
    for number, name in FILTER_NAMES.items():
        assert filter_by_name(kq, name) == number
        assert filter_by_name(kq, name.encode()) == number
        assert filter_name(kq, number) == name
    # A bare descriptor works as well as a kqueue object.
    assert filter_by_name(kq.fileno(), "EVFILT_TIMER") == kqueued.KQ_FILTER_TIMER
    assert filter_name(kq.fileno(), kqueued.KQ_FILTER_TIMER) == "EVFILT_TIMER"


def test_unknown_name_is_enoent(kq):
    with pytest.raises(OSError) as info:
        filter_by_name(kq, "EVFILT_NOPE")
    assert info.value.errno == errno.ENOENT
    with pytest.raises(OSError) as info:
        filter_by_name(kq, "")
    assert info.value.errno == errno.ENOENT


def test_name_length_limit(kq):
    # KFILTER_MAXNAME (256) bytes including the NUL: 255 characters still fit.
    with pytest.raises(OSError) as info:
        filter_by_name(kq, "A" * (kqueued.KFILTER_MAXNAME - 1))
    assert info.value.errno == errno.ENOENT
    for n in (kqueued.KFILTER_MAXNAME, 300):
        with pytest.raises(OSError) as info:
            filter_by_name(kq, "A" * n)
        assert info.value.errno == errno.ENAMETOOLONG, n


def test_name_argument_checks(kq):
    with pytest.raises(ValueError):
        filter_by_name(kq, "EVFILT_READ\0junk")
    with pytest.raises(TypeError):
        filter_by_name(kq, 3)


def test_unknown_filter_is_enoent(kq):
    for number in (kqueued.KQ_FILTER_SYSCOUNT, 12345, 2**32 - 1):
        with pytest.raises(OSError) as info:
            filter_name(kq, number)
        assert info.value.errno == errno.ENOENT, number


def test_name_buffer_too_small_is_enametoolong(kq):
    name = "EVFILT_TIMER"
    for size in (0, 1, 8, len(name)):  # the NUL must fit too
        with pytest.raises(OSError) as info:
            filter_name(kq, kqueued.KQ_FILTER_TIMER, size)
        assert info.value.errno == errno.ENAMETOOLONG, size
    assert filter_name(kq, kqueued.KQ_FILTER_TIMER, len(name) + 1) == name


def test_aio_is_named_but_not_implemented(kq):
    assert filter_by_name(kq, "EVFILT_AIO") == kqueued.KQ_FILTER_AIO
    assert filter_name(kq, kqueued.KQ_FILTER_AIO) == "EVFILT_AIO"
    with pytest.raises(OSError) as info:
        kq.control([kevent(1, kqueued.KQ_FILTER_AIO, kqueued.KQ_EV_ADD)], 0)
    assert info.value.errno == errno.EINVAL


def test_closed_kqueue(kq):
    kq.close()
    with pytest.raises(ValueError):
        filter_by_name(kq, "EVFILT_READ")
    with pytest.raises(ValueError):
        filter_name(kq, 0)
