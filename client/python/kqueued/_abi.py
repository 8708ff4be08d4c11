"""The /dev/kqueue device ABI (proto/kqueue_abi.h) for Python.

Everything here mirrors proto/kqueue_abi.h, which is the contract: the record
layouts as ctypes structures (their sizes and offsets are asserted below, as
the header asserts them), the ioctl request numbers, and the constants.
Constants keep their C names here; the package re-exports them under the
names CPython's select module uses (KQ_FILTER_READ, KQ_EV_ADD, ...).
"""

import ctypes
import struct

# ---- Version and device ----------------------------------------------------

# The header's version: what this module knows about.
KQ_ABI_VERSION = 4
# The oldest daemon the module works with (everything but the inline kevent).
KQ_ABI_REQUIRED = 2
# The first version with KQ_IOC_KEVENT_INLINE_*.
KQ_ABI_INLINE = 3
# The first version with KQ_IOC_LOCAL_ATTACH (the fast path, _local.py).
KQ_ABI_LOCAL = 4
KQ_DEFAULT_DEVICE = "/dev/kqueue"
KQ_DEVICE_ENV = "KQUEUE_DEVICE"

# ---- Records ----------------------------------------------------------------


class KqKevent(ctypes.Structure):
    """struct kq_kevent: NetBSD's LP64 struct kevent, 40 bytes."""

    _fields_ = [
        ("ident", ctypes.c_uint64),     # @0
        ("filter", ctypes.c_uint32),    # @8
        ("flags", ctypes.c_uint32),     # @12
        ("fflags", ctypes.c_uint32),    # @16
        ("reserved", ctypes.c_uint32),  # @20 zero on output, ignored on input
        ("data", ctypes.c_int64),       # @24
        ("udata", ctypes.c_uint64),     # @32
    ]


class KqKeventArgs(ctypes.Structure):
    """struct kq_kevent_args: kevent(2)'s arguments, 56 bytes."""

    _fields_ = [
        ("changelist", ctypes.c_uint64),   # @0  address of KqKevent[nchanges]
        ("nchanges", ctypes.c_uint64),     # @8
        ("eventlist", ctypes.c_uint64),    # @16 address of KqKevent[nevents]
        ("nevents", ctypes.c_uint64),      # @24
        ("timeout_sec", ctypes.c_int64),   # @32
        ("timeout_nsec", ctypes.c_int64),  # @40
        ("flags", ctypes.c_uint32),        # @48 KQ_KEVENT_*
        ("kq_fd", ctypes.c_int32),         # @52 with KQ_KEVENT_KQFD, else 0
    ]


class KqKeventInline(ctypes.Structure):
    """struct kq_kevent_inline (ABI 3), 32 bytes, followed in the ioctl
    argument by `capacity` KqKevent records: changes at [0, nchanges) on
    input, events at [0, result) on output."""

    _fields_ = [
        ("nchanges", ctypes.c_uint32),     # @0
        ("nevents", ctypes.c_uint32),      # @4  room for events
        ("flags", ctypes.c_uint32),        # @8  KQ_KEVENT_*
        ("kq_fd", ctypes.c_int32),         # @12 with KQ_KEVENT_KQFD, else 0
        ("timeout_sec", ctypes.c_int64),   # @16
        ("timeout_nsec", ctypes.c_int64),  # @24
    ]


class KfilterMapping(ctypes.Structure):
    """NetBSD's struct kfilter_mapping, 24 bytes; name is an address."""

    _fields_ = [
        ("name", ctypes.c_uint64),     # @0 char *, in the caller's memory
        ("len", ctypes.c_uint64),      # @8 size_t
        ("filter", ctypes.c_uint32),   # @16
        ("_pad", ctypes.c_uint32),     # @20
    ]


class KqVersion(ctypes.Structure):
    """struct kq_version, 64 bytes."""

    _fields_ = [
        ("abi_version", ctypes.c_uint32),       # @0
        ("reserved", ctypes.c_uint32),          # @4
        ("daemon_version", ctypes.c_char * 56),  # @8 NUL-terminated
    ]


def _check_layout(struct, size, offsets):
    if ctypes.sizeof(struct) != size:
        raise ImportError("%s is %d bytes, the ABI says %d"
                          % (struct.__name__, ctypes.sizeof(struct), size))
    for name, off in offsets.items():
        if getattr(struct, name).offset != off:
            raise ImportError("%s.%s at %d, the ABI says %d"
                              % (struct.__name__, name,
                                 getattr(struct, name).offset, off))


_check_layout(KqKevent, 40, {"ident": 0, "filter": 8, "flags": 12,
                             "fflags": 16, "reserved": 20, "data": 24,
                             "udata": 32})
_check_layout(KqKeventArgs, 56, {"changelist": 0, "nchanges": 8,
                                 "eventlist": 16, "nevents": 24,
                                 "timeout_sec": 32, "timeout_nsec": 40,
                                 "flags": 48, "kq_fd": 52})
_check_layout(KqKeventInline, 32, {"nchanges": 0, "nevents": 4, "flags": 8,
                                   "kq_fd": 12, "timeout_sec": 16,
                                   "timeout_nsec": 24})
_check_layout(KfilterMapping, 24, {"name": 0, "len": 8, "filter": 16})
_check_layout(KqVersion, 64, {"abi_version": 0, "daemon_version": 8})

# ---- ioctl request numbers (Linux asm-generic encoding) ---------------------

_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction, type_char, nr, size):
    return (direction << 30) | (size << 16) | (ord(type_char) << 8) | nr


KFILTER_BYFILTER = _ioc(_IOC_READ | _IOC_WRITE, "k", 0,
                        ctypes.sizeof(KfilterMapping))
KFILTER_BYNAME = _ioc(_IOC_READ | _IOC_WRITE, "k", 1,
                      ctypes.sizeof(KfilterMapping))
KQ_IOC_KEVENT = _ioc(_IOC_READ | _IOC_WRITE, "k", 0x40,
                     ctypes.sizeof(KqKeventArgs))
KQ_IOC_VERSION = _ioc(_IOC_READ, "k", 0x41, ctypes.sizeof(KqVersion))


# The inline kevent (ABI 3): header and records travel inside the argument,
# so a command's size says its capacity. One command per capacity; the
# largest keeps _IOC_SIZE within FUSE's limit of 16383 bytes.
KQ_KEVENT_INLINE_CAP_1 = 1
KQ_KEVENT_INLINE_CAP_8 = 8
KQ_KEVENT_INLINE_CAP_64 = 64
KQ_KEVENT_INLINE_CAP_408 = 408
KQ_KEVENT_INLINE_MAX = KQ_KEVENT_INLINE_CAP_408


def _inline_ioc(nr, capacity):
    return _ioc(_IOC_READ | _IOC_WRITE, "k", nr,
                ctypes.sizeof(KqKeventInline)
                + capacity * ctypes.sizeof(KqKevent))


KQ_IOC_KEVENT_INLINE_1 = _inline_ioc(0x50, KQ_KEVENT_INLINE_CAP_1)
KQ_IOC_KEVENT_INLINE_8 = _inline_ioc(0x51, KQ_KEVENT_INLINE_CAP_8)
KQ_IOC_KEVENT_INLINE_64 = _inline_ioc(0x52, KQ_KEVENT_INLINE_CAP_64)
KQ_IOC_KEVENT_INLINE_408 = _inline_ioc(0x53, KQ_KEVENT_INLINE_CAP_408)

# (capacity, request), smallest first: control() takes the first that fits.
KQ_KEVENT_INLINE_REQUESTS = (
    (KQ_KEVENT_INLINE_CAP_1, KQ_IOC_KEVENT_INLINE_1),
    (KQ_KEVENT_INLINE_CAP_8, KQ_IOC_KEVENT_INLINE_8),
    (KQ_KEVENT_INLINE_CAP_64, KQ_IOC_KEVENT_INLINE_64),
    (KQ_KEVENT_INLINE_CAP_408, KQ_IOC_KEVENT_INLINE_408),
)

# Knotes the owner collects itself (ABI 4): struct kq_local_attach is
# epoll_fd (int32), flags (uint32, zero), tag (uint64), reserved (uint64).
KQ_LOCAL_ATTACH_SIZE = 24
KQ_IOC_LOCAL_ATTACH = _ioc(_IOC_WRITE, "k", 0x54, KQ_LOCAL_ATTACH_SIZE)

# The header spells the numbers out; a mismatch means a layout mistake here.
assert KFILTER_BYFILTER == 0xC0186B00
assert KFILTER_BYNAME == 0xC0186B01
assert KQ_IOC_KEVENT == 0xC0386B40
assert KQ_IOC_VERSION == 0x80406B41
assert KQ_IOC_KEVENT_INLINE_1 == 0xC0486B50
assert KQ_IOC_KEVENT_INLINE_8 == 0xC1606B51
assert KQ_IOC_KEVENT_INLINE_64 == 0xCA206B52
assert KQ_IOC_KEVENT_INLINE_408 == 0xFFE06B53
assert KQ_IOC_LOCAL_ATTACH == 0x40186B54

# The same two records as struct formats (native byte order, no padding),
# to pack the inline argument without a ctypes object per record:
# ident, filter, flags, fflags, reserved, data, udata.
KEVENT_STRUCT = struct.Struct("=QIIIIqQ")
# nchanges, nevents, flags, kq_fd, timeout_sec, timeout_nsec.
KEVENT_INLINE_STRUCT = struct.Struct("=IIIiqq")
assert KEVENT_STRUCT.size == ctypes.sizeof(KqKevent)
assert KEVENT_INLINE_STRUCT.size == ctypes.sizeof(KqKeventInline)

# kq_kevent_args.flags and kq_kevent_inline.flags
KQ_KEVENT_TIMEOUT = 0x1
KQ_KEVENT_KQFD = 0x2  # kq_fd names this kqueue's descriptor (nesting)
KQ_KEVENT_LOCAL_CHANGES = 0x4  # honour KQ_CHANGE_LOCAL marks (ABI 4)
KQ_KEVENT_SKIP_LOCAL = 0x8     # leave local knotes to the caller (ABI 4)
# In a change's `reserved` (ABI 4): the caller collects this knote itself.
KQ_CHANGE_LOCAL = 0x1

KFILTER_MAXNAME = 256

# ---- Filters -----------------------------------------------------------------

EVFILT_READ = 0
EVFILT_WRITE = 1
EVFILT_AIO = 2
EVFILT_VNODE = 3
EVFILT_PROC = 4
EVFILT_SIGNAL = 5
EVFILT_TIMER = 6
EVFILT_FS = 7
EVFILT_USER = 8
EVFILT_EMPTY = 9
EVFILT_SYSCOUNT = 10

# ---- Flags -------------------------------------------------------------------

EV_ADD = 0x0001
EV_DELETE = 0x0002
EV_ENABLE = 0x0004
EV_DISABLE = 0x0008
EV_ONESHOT = 0x0010
EV_CLEAR = 0x0020
EV_RECEIPT = 0x0040
EV_DISPATCH = 0x0080
EV_SYSFLAGS = 0xF000
EV_FLAG1 = 0x2000
EV_EOF = 0x8000
EV_ERROR = 0x4000

# ---- fflags ------------------------------------------------------------------

NOTE_LOWAT = 0x0001

NOTE_DELETE = 0x0001
NOTE_WRITE = 0x0002
NOTE_EXTEND = 0x0004
NOTE_ATTRIB = 0x0008
NOTE_LINK = 0x0010
NOTE_RENAME = 0x0020
NOTE_REVOKE = 0x0040
NOTE_OPEN = 0x0080
NOTE_CLOSE = 0x0100
NOTE_CLOSE_WRITE = 0x0200
NOTE_READ = 0x0400

NOTE_EXIT = 0x80000000
NOTE_FORK = 0x40000000
NOTE_EXEC = 0x20000000
NOTE_PCTRLMASK = 0xF0000000
NOTE_PDATAMASK = 0x000FFFFF
NOTE_TRACK = 0x00000001
NOTE_TRACKERR = 0x00000002
NOTE_CHILD = 0x00000004

NOTE_FFNOP = 0x00000000
NOTE_FFAND = 0x40000000
NOTE_FFOR = 0x80000000
NOTE_FFCOPY = 0xC0000000
NOTE_FFCTRLMASK = 0xC0000000
NOTE_FFLAGSMASK = 0x00FFFFFF
NOTE_TRIGGER = 0x01000000

NOTE_MSECONDS = 0x00000000
NOTE_SECONDS = 0x00000001
NOTE_USECONDS = 0x00000002
NOTE_NSECONDS = 0x00000003
NOTE_TIMER_UNITMASK = 0x00000003
NOTE_ABSTIME = 0x00000010
