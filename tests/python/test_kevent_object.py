"""kevent objects and constants: no daemon needed."""

import os
import socket

import pytest

import kqueued
from kqueued import _abi, kevent

from kq_helpers import header_defines

U64 = 2**64 - 1


def test_defaults_match_cpython():
    ev = kevent(5)
    assert (ev.ident, ev.filter, ev.flags, ev.fflags, ev.data, ev.udata) == (
        5, kqueued.KQ_FILTER_READ, kqueued.KQ_EV_ADD, 0, 0, 0)


def test_keywords_and_positionals():
    a = kevent(7, kqueued.KQ_FILTER_WRITE, kqueued.KQ_EV_ADD | kqueued.KQ_EV_CLEAR,
               kqueued.KQ_NOTE_LOWAT, 100, 12)
    b = kevent(ident=7, filter=kqueued.KQ_FILTER_WRITE,
               flags=kqueued.KQ_EV_ADD | kqueued.KQ_EV_CLEAR,
               fflags=kqueued.KQ_NOTE_LOWAT, data=100, udata=12)
    assert a == b
    assert a.data == 100 and a.udata == 12
    with pytest.raises(TypeError):
        kevent()
    with pytest.raises(TypeError):
        kevent(1, bogus=2)


def test_ident_from_fileno_objects():
    r, w = os.pipe()
    try:
        with os.fdopen(os.dup(r), "rb") as f:
            assert kevent(f).ident == f.fileno()
        s = socket.socket()
        try:
            assert kevent(s).ident == s.fileno()
        finally:
            s.close()
    finally:
        os.close(r)
        os.close(w)

    class Neg(object):
        def fileno(self):
            return -1

    with pytest.raises(ValueError):
        kevent(Neg())
    with pytest.raises(TypeError):
        kevent(object())
    with pytest.raises(TypeError):
        kevent("3")


def test_ident_range_is_size_t():
    assert kevent(U64).ident == U64
    assert kevent(0).ident == 0
    with pytest.raises(OverflowError):
        kevent(-1)
    with pytest.raises(OverflowError):
        kevent(2**64)
    assert kevent(True).ident == 1  # bool is an int, as in CPython


def test_udata_is_unsigned_64_and_masked_like_cpython():
    assert kevent(1, udata=U64).udata == U64
    assert kevent(1, udata=2**63).udata == 2**63
    # CPython parses udata with the "K" unit: wraps instead of raising.
    assert kevent(1, udata=-1).udata == U64
    assert kevent(1, udata=2**64 + 5).udata == 5
    assert isinstance(kevent(1, udata=U64).udata, int)


def test_filter_flags_fflags_are_uint32_masked():
    ev = kevent(1, filter=-1, flags=2**32 + 1, fflags=0xFFFFFFFF)
    assert ev.filter == 0xFFFFFFFF
    assert ev.flags == 1
    assert ev.fflags == 0xFFFFFFFF
    with pytest.raises(TypeError):
        kevent(1, filter=1.0)


def test_data_is_int64_checked():
    assert kevent(1, data=2**63 - 1).data == 2**63 - 1
    assert kevent(1, data=-2**63).data == -2**63
    with pytest.raises(OverflowError):
        kevent(1, data=2**63)
    with pytest.raises(OverflowError):
        kevent(1, data=-2**63 - 1)


def test_attributes_are_writable():
    ev = kevent(1)
    ev.ident = 9
    ev.filter = kqueued.KQ_FILTER_TIMER
    ev.flags = kqueued.KQ_EV_DELETE
    ev.fflags = 3
    ev.data = -4
    ev.udata = U64
    assert ev == kevent(9, kqueued.KQ_FILTER_TIMER, kqueued.KQ_EV_DELETE, 3, -4, U64)
    with pytest.raises(AttributeError):
        ev.other = 1


def test_rich_comparison_is_the_tuple_order():
    base = kevent(5, 1, 1, 1, 1, 1)
    assert base == kevent(5, 1, 1, 1, 1, 1)
    assert not base != kevent(5, 1, 1, 1, 1, 1)
    for field, bigger in [("ident", kevent(6, 0, 0, 0, 0, 0)),
                          ("filter", kevent(5, 2, 0, 0, 0, 0)),
                          ("flags", kevent(5, 1, 2, 0, 0, 0)),
                          ("fflags", kevent(5, 1, 1, 2, 0, 0)),
                          ("data", kevent(5, 1, 1, 1, 2, 0)),
                          ("udata", kevent(5, 1, 1, 1, 1, 2))]:
        assert base < bigger, field
        assert base <= bigger, field
        assert bigger > base, field
        assert bigger >= base, field
        assert base != bigger, field
    # data is signed.
    assert kevent(1, data=-1) < kevent(1, data=0)
    # CPython compares udata as intptr_t, so the top bit sorts first.
    assert kevent(1, udata=2**63) < kevent(1, udata=0)
    assert sorted([kevent(3), kevent(1), kevent(2)]) == [kevent(1), kevent(2), kevent(3)]


def test_comparison_with_other_types():
    ev = kevent(1)
    assert (ev == 1) is False
    assert (ev != "x") is True
    with pytest.raises(TypeError):
        ev < 1


def test_not_hashable_like_cpython():
    with pytest.raises(TypeError):
        hash(kevent(1))


def test_repr():
    r = repr(kevent(3, kqueued.KQ_FILTER_WRITE, 0x11, 2, -1, U64))
    assert r == ("<kqueued.kevent ident=3 filter=1 flags=0x11 fflags=0x2 "
                 "data=0xffffffffffffffff udata=0xffffffffffffffff>")


CPYTHON_NAMES = """
KQ_FILTER_READ KQ_FILTER_WRITE KQ_FILTER_AIO KQ_FILTER_VNODE KQ_FILTER_PROC
KQ_FILTER_SIGNAL KQ_FILTER_TIMER
KQ_EV_ADD KQ_EV_DELETE KQ_EV_ENABLE KQ_EV_DISABLE KQ_EV_ONESHOT KQ_EV_CLEAR
KQ_EV_EOF KQ_EV_ERROR KQ_EV_SYSFLAGS KQ_EV_FLAG1
KQ_NOTE_LOWAT KQ_NOTE_DELETE KQ_NOTE_WRITE KQ_NOTE_EXTEND KQ_NOTE_ATTRIB
KQ_NOTE_LINK KQ_NOTE_RENAME KQ_NOTE_REVOKE KQ_NOTE_EXIT KQ_NOTE_FORK
KQ_NOTE_EXEC KQ_NOTE_PCTRLMASK KQ_NOTE_PDATAMASK KQ_NOTE_TRACK KQ_NOTE_CHILD
KQ_NOTE_TRACKERR
""".split()

EXTRA_NAMES = """
KQ_FILTER_FS KQ_FILTER_USER KQ_FILTER_EMPTY KQ_EV_RECEIPT KQ_EV_DISPATCH
KQ_NOTE_OPEN KQ_NOTE_CLOSE KQ_NOTE_CLOSE_WRITE KQ_NOTE_READ
KQ_NOTE_FFNOP KQ_NOTE_FFAND KQ_NOTE_FFOR KQ_NOTE_FFCOPY KQ_NOTE_FFCTRLMASK
KQ_NOTE_FFLAGSMASK KQ_NOTE_TRIGGER KQ_NOTE_MSECONDS KQ_NOTE_SECONDS
KQ_NOTE_USECONDS KQ_NOTE_NSECONDS KQ_NOTE_ABSTIME
""".split()


def test_cpython_and_extra_names_exist():
    for name in CPYTHON_NAMES + EXTRA_NAMES:
        assert isinstance(getattr(kqueued, name), int), name
        assert name in kqueued.__all__, name
    assert kqueued.error is OSError


def test_constants_match_the_abi_header():
    defines = header_defines()
    checked = 0
    for name, value in defines.items():
        if hasattr(_abi, name):
            assert getattr(_abi, name) == value, name
            checked += 1
        for prefix in ("EVFILT_", "EV_", "NOTE_"):
            if name.startswith(prefix):
                py = {"EVFILT_": "KQ_FILTER_", "EV_": "KQ_EV_",
                      "NOTE_": "KQ_NOTE_"}[prefix] + name[len(prefix):]
                assert getattr(kqueued, py) == value, py
                checked += 1
    for name in ("KQ_IOC_KEVENT", "KQ_IOC_VERSION", "KFILTER_BYNAME",
                 "KFILTER_BYFILTER", "KQ_ABI_VERSION", "KFILTER_MAXNAME",
                 "KQ_IOC_KEVENT_INLINE_1", "KQ_IOC_KEVENT_INLINE_8",
                 "KQ_IOC_KEVENT_INLINE_64", "KQ_IOC_KEVENT_INLINE_408",
                 "KQ_KEVENT_INLINE_CAP_408"):
        assert getattr(_abi, name) == defines[name], name
    assert checked > 60


def test_record_layouts():
    import ctypes
    assert ctypes.sizeof(_abi.KqKevent) == 40
    assert ctypes.sizeof(_abi.KqKeventArgs) == 56
    assert ctypes.sizeof(_abi.KqKeventInline) == 32
    assert ctypes.sizeof(_abi.KfilterMapping) == 24
    assert ctypes.sizeof(_abi.KqVersion) == 64
