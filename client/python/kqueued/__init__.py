"""BSD kqueue for Linux through kqueued's /dev/kqueue, shaped like select.kqueue.

Code written for BSD's ``select.kqueue`` / ``select.kevent`` runs unchanged
with this module in their place::

    try:
        from select import kqueue, kevent, KQ_FILTER_READ, KQ_EV_ADD
    except ImportError:  # Linux: kqueued serves kqueue as a device
        from kqueued import kqueue, kevent, KQ_FILTER_READ, KQ_EV_ADD

Every ``kqueue()`` opens the device (``$KQUEUE_DEVICE`` or ``/dev/kqueue``)
once: each open file is a new kqueue. ``kqueue.control`` is one ioctl: an
inline kevent (KQ_IOC_KEVENT_INLINE_*, the records inside the argument) when
the daemon speaks ABI 3 and the records fit, else KQ_IOC_KEVENT (the records
in this process's memory); ``KQUEUE_INLINE=0`` in the environment forces the
latter. ``filter_by_name`` / ``filter_name`` are NetBSD's KFILTER_BYNAME
and KFILTER_BYFILTER. The numbers are NetBSD's (proto/kqueue_abi.h).
docs/python-select-kqueue.md compares the module point by point with
CPython's select.kqueue.

Standard library only: os, fcntl, ctypes, struct, errno.
"""

import ctypes
import errno as _errno
import fcntl as _fcntl
import math as _math
import operator as _operator
import os as _os
import time as _time

from kqueued import _abi
from kqueued import _local

__all__ = [
    "kqueue", "kevent", "error", "filter_by_name", "filter_name",
    "daemon_version", "KFILTER_MAXNAME",
]

# select.error is OSError; kept for code that catches it.
error = OSError

KFILTER_MAXNAME = _abi.KFILTER_MAXNAME

# ---- Constants under CPython's names ----------------------------------------

# Filters. CPython on NetBSD has the same numbers (FreeBSD/macOS use negative
# ones: compare with the names, never with literals).
KQ_FILTER_READ = _abi.EVFILT_READ
KQ_FILTER_WRITE = _abi.EVFILT_WRITE
KQ_FILTER_AIO = _abi.EVFILT_AIO
KQ_FILTER_VNODE = _abi.EVFILT_VNODE
KQ_FILTER_PROC = _abi.EVFILT_PROC
KQ_FILTER_SIGNAL = _abi.EVFILT_SIGNAL
KQ_FILTER_TIMER = _abi.EVFILT_TIMER
# Not in CPython's select (this ABI's extras).
KQ_FILTER_FS = _abi.EVFILT_FS
KQ_FILTER_USER = _abi.EVFILT_USER
KQ_FILTER_EMPTY = _abi.EVFILT_EMPTY
KQ_FILTER_SYSCOUNT = _abi.EVFILT_SYSCOUNT

# Flags.
KQ_EV_ADD = _abi.EV_ADD
KQ_EV_DELETE = _abi.EV_DELETE
KQ_EV_ENABLE = _abi.EV_ENABLE
KQ_EV_DISABLE = _abi.EV_DISABLE
KQ_EV_ONESHOT = _abi.EV_ONESHOT
KQ_EV_CLEAR = _abi.EV_CLEAR
KQ_EV_SYSFLAGS = _abi.EV_SYSFLAGS
KQ_EV_FLAG1 = _abi.EV_FLAG1
KQ_EV_EOF = _abi.EV_EOF
KQ_EV_ERROR = _abi.EV_ERROR
# Extras.
KQ_EV_RECEIPT = _abi.EV_RECEIPT
KQ_EV_DISPATCH = _abi.EV_DISPATCH

# EVFILT_READ / EVFILT_WRITE.
KQ_NOTE_LOWAT = _abi.NOTE_LOWAT

# EVFILT_VNODE.
KQ_NOTE_DELETE = _abi.NOTE_DELETE
KQ_NOTE_WRITE = _abi.NOTE_WRITE
KQ_NOTE_EXTEND = _abi.NOTE_EXTEND
KQ_NOTE_ATTRIB = _abi.NOTE_ATTRIB
KQ_NOTE_LINK = _abi.NOTE_LINK
KQ_NOTE_RENAME = _abi.NOTE_RENAME
KQ_NOTE_REVOKE = _abi.NOTE_REVOKE
# Extras (NetBSD 10).
KQ_NOTE_OPEN = _abi.NOTE_OPEN
KQ_NOTE_CLOSE = _abi.NOTE_CLOSE
KQ_NOTE_CLOSE_WRITE = _abi.NOTE_CLOSE_WRITE
KQ_NOTE_READ = _abi.NOTE_READ

# EVFILT_PROC.
KQ_NOTE_EXIT = _abi.NOTE_EXIT
KQ_NOTE_FORK = _abi.NOTE_FORK
KQ_NOTE_EXEC = _abi.NOTE_EXEC
KQ_NOTE_PCTRLMASK = _abi.NOTE_PCTRLMASK
KQ_NOTE_PDATAMASK = _abi.NOTE_PDATAMASK
KQ_NOTE_TRACK = _abi.NOTE_TRACK
KQ_NOTE_CHILD = _abi.NOTE_CHILD
KQ_NOTE_TRACKERR = _abi.NOTE_TRACKERR

# Extras: EVFILT_USER.
KQ_NOTE_FFNOP = _abi.NOTE_FFNOP
KQ_NOTE_FFAND = _abi.NOTE_FFAND
KQ_NOTE_FFOR = _abi.NOTE_FFOR
KQ_NOTE_FFCOPY = _abi.NOTE_FFCOPY
KQ_NOTE_FFCTRLMASK = _abi.NOTE_FFCTRLMASK
KQ_NOTE_FFLAGSMASK = _abi.NOTE_FFLAGSMASK
KQ_NOTE_TRIGGER = _abi.NOTE_TRIGGER

# Extras: EVFILT_TIMER units.
KQ_NOTE_MSECONDS = _abi.NOTE_MSECONDS
KQ_NOTE_SECONDS = _abi.NOTE_SECONDS
KQ_NOTE_USECONDS = _abi.NOTE_USECONDS
KQ_NOTE_NSECONDS = _abi.NOTE_NSECONDS
KQ_NOTE_TIMER_UNITMASK = _abi.NOTE_TIMER_UNITMASK
KQ_NOTE_ABSTIME = _abi.NOTE_ABSTIME

__all__ += [name for name in list(globals()) if name.startswith("KQ_")]

# ---- Integer conversions as CPython's argument parser does them -------------

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_INT_MIN = -(1 << 31)
_INT_MAX = (1 << 31) - 1


def _masked(value, mask):
    # The "I" and "K" format units: any integer (or __index__), bits beyond
    # the width dropped, negative numbers wrapped. No overflow error.
    return _operator.index(value) & mask


def _int64(value):
    # The "L" format unit: a signed 64-bit value, OverflowError outside.
    v = _operator.index(value)
    if not _I64_MIN <= v <= _I64_MAX:
        raise OverflowError("Python int too large to convert to C long long")
    return v


def _c_int(value):
    # The "i" format unit (max_events).
    v = _operator.index(value)
    if v > _INT_MAX:
        raise OverflowError("signed integer is greater than maximum")
    if v < _INT_MIN:
        raise OverflowError("signed integer is less than minimum")
    return v


def _ident_value(ident):
    # An int is taken as is (size_t: OverflowError if negative or too big);
    # anything else must have fileno(), as PyObject_AsFileDescriptor wants.
    if isinstance(ident, int):
        if ident < 0:
            raise OverflowError("can't convert negative value to size_t")
        if ident > _U64:
            raise OverflowError("Python int too large to convert to C size_t")
        return int(ident)
    fileno = getattr(ident, "fileno", None)
    if fileno is None:
        raise TypeError("argument must be an int, or have a fileno() method.")
    fd = fileno()
    if not isinstance(fd, int):
        raise TypeError("fileno() returned a non-integer")
    if fd < 0:
        raise ValueError("file descriptor cannot be a negative integer (%d)"
                         % fd)
    if fd > _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    return int(fd)


def _signed64(u):
    return u - (1 << 64) if u & (1 << 63) else u


# ---- kevent -----------------------------------------------------------------


class kevent(object):
    """kevent(ident, filter=KQ_FILTER_READ, flags=KQ_EV_ADD, fflags=0, data=0, udata=0)

    One struct kevent. ``ident`` is an int or an object with ``fileno()``
    (the descriptor number is stored). ``udata`` is an integer, returned
    bit-exact as an unsigned 64-bit value; it cannot hold a Python object.
    Comparisons order kevents as the tuple (ident, filter, flags, fflags,
    data, udata); kevents are not hashable.
    """

    __slots__ = ("_ident", "_filter", "_flags", "_fflags", "_data", "_udata")
    __hash__ = None

    def __init__(self, ident, filter=KQ_FILTER_READ, flags=KQ_EV_ADD,
                 fflags=0, data=0, udata=0):
        # Same order as CPython: the numeric fields are parsed first.
        flt = _masked(filter, _U32)
        flg = _masked(flags, _U32)
        ffl = _masked(fflags, _U32)
        dat = _int64(data)
        ud = _masked(udata, _U64)
        self._ident = _ident_value(ident)
        self._filter = flt
        self._flags = flg
        self._fflags = ffl
        self._data = dat
        self._udata = ud

    @classmethod
    def _from_values(cls, ident, filter, flags, fflags, reserved, data, udata):
        # One unpacked _abi.KEVENT_STRUCT record (reserved is ignored).
        ev = cls.__new__(cls)
        ev._ident = ident
        ev._filter = filter
        ev._flags = flags
        ev._fflags = fflags
        ev._data = data
        ev._udata = udata
        return ev

    @classmethod
    def _from_record(cls, rec):
        ev = cls.__new__(cls)
        ev._ident = rec.ident
        ev._filter = rec.filter
        ev._flags = rec.flags
        ev._fflags = rec.fflags
        ev._data = rec.data
        ev._udata = rec.udata
        return ev

    def _to_record(self, rec):
        rec.ident = self._ident
        rec.filter = self._filter
        rec.flags = self._flags
        rec.fflags = self._fflags
        rec.reserved = 0
        rec.data = self._data
        rec.udata = self._udata

    # Writable attributes, as CPython's (structure members without READONLY).
    @property
    def ident(self):
        """Identifier: usually a file descriptor; a pid, signal, timer id..."""
        return self._ident

    @ident.setter
    def ident(self, value):
        self._ident = _masked(value, _U64)

    @property
    def filter(self):
        """The filter (KQ_FILTER_*)."""
        return self._filter

    @filter.setter
    def filter(self, value):
        self._filter = _masked(value, _U32)

    @property
    def flags(self):
        """Actions and flags (KQ_EV_*)."""
        return self._flags

    @flags.setter
    def flags(self, value):
        self._flags = _masked(value, _U32)

    @property
    def fflags(self):
        """Filter-specific flags (KQ_NOTE_*)."""
        return self._fflags

    @fflags.setter
    def fflags(self, value):
        self._fflags = _masked(value, _U32)

    @property
    def data(self):
        """Filter-specific data (signed 64-bit)."""
        return self._data

    @data.setter
    def data(self, value):
        self._data = _int64(value)

    @property
    def udata(self):
        """Opaque user value (unsigned 64-bit), returned unchanged."""
        return self._udata

    @udata.setter
    def udata(self, value):
        self._udata = _masked(value, _U64)

    def _key(self):
        # CPython compares udata as intptr_t: signed.
        return (self._ident, self._filter, self._flags, self._fflags,
                self._data, _signed64(self._udata))

    def __eq__(self, other):
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() == other._key()

    def __ne__(self, other):
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() != other._key()

    def __lt__(self, other):
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() < other._key()

    def __le__(self, other):
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() <= other._key()

    def __gt__(self, other):
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() > other._key()

    def __ge__(self, other):
        if not isinstance(other, kevent):
            return NotImplemented
        return self._key() >= other._key()

    def __repr__(self):
        return ("<kqueued.kevent ident=%d filter=%d flags=0x%x fflags=0x%x "
                "data=0x%x udata=0x%x>"
                % (self._ident, self._filter, self._flags, self._fflags,
                   self._data & _U64, self._udata))


# ---- kqueue -----------------------------------------------------------------


def _device_path():
    path = _os.environ.get(_abi.KQ_DEVICE_ENV)
    return path if path else _abi.KQ_DEFAULT_DEVICE


def _query_version(fd):
    v = _abi.KqVersion()
    _fcntl.ioctl(fd, _abi.KQ_IOC_VERSION, v, True)
    return v.abi_version, v.daemon_version.decode("utf-8", "replace")


def _kevent_args(fd):
    """A kq_kevent_args naming the caller's descriptor of the kqueue."""
    args = _abi.KqKeventArgs()
    args.flags = _abi.KQ_KEVENT_KQFD
    args.kq_fd = fd
    return args


# KQUEUE_INLINE=0 forces the pointer ioctl (KQ_IOC_KEVENT) for kqueues made
# from then on, as it does for the C library: the suites run in both modes.
_INLINE_ENV = "KQUEUE_INLINE"


def _inline_allowed():
    return _os.environ.get(_INLINE_ENV) != "0"


def _inline_request(nchanges, nevents):
    """(capacity, ioctl request) of the smallest inline kevent that holds
    max(nchanges, nevents) records, or None when none does (more than 408:
    KQ_IOC_KEVENT then)."""
    need = nchanges if nchanges > nevents else nevents
    for capacity, request in _abi.KQ_KEVENT_INLINE_REQUESTS:
        if need <= capacity:
            return capacity, request
    return None


def _open_kqueue_fd():
    """A new kqueue descriptor and the daemon's ABI version."""
    path = _device_path()
    fd = _os.open(path, _os.O_RDWR | _os.O_CLOEXEC)
    try:
        try:
            abi, _ = _query_version(fd)
        except OSError as e:
            if e.errno in (_errno.ENOTTY, _errno.EINVAL):
                raise OSError(e.errno, "not a kqueue device (%s)"
                              % _os.strerror(e.errno), path) from None
            raise
        # A later daemon serves every earlier ABI version unchanged; ABI 2
        # lacks only the inline kevent, which the module then does without.
        if abi < _abi.KQ_ABI_REQUIRED:
            raise OSError(_errno.EPROTONOSUPPORT,
                          "kqueue device speaks ABI %d, this module needs ABI %d"
                          % (abi, _abi.KQ_ABI_REQUIRED), path)
        # Tell the daemon which descriptor this queue is, so another kqueue
        # can watch it (KQ_FILTER_READ on a kqueue): an empty kevent call.
        _fcntl.ioctl(fd, _abi.KQ_IOC_KEVENT, _kevent_args(fd), True)
    except BaseException:
        _os.close(fd)
        raise
    return fd, abi


_NS_PER_SEC = 1000000000


def _timeout_to_ns(obj):
    """Seconds (int or float) to nanoseconds, rounded away from zero as
    CPython's _PyTime_ROUND_TIMEOUT does; TypeError for anything that is not
    a representable number (CPython replaces every conversion error, NaN and
    overflow included, with this TypeError)."""
    try:
        if isinstance(obj, float):
            if _math.isnan(obj):
                raise ValueError("Invalid value NaN (not a number)")
            d = obj * 1e9
            d = _math.ceil(d) if d >= 0 else _math.floor(d)
            if not (-9.223372036854775808e18 <= d < 9.223372036854775808e18):
                raise OverflowError("timestamp too large")
            return int(d)
        sec = _operator.index(obj)
        ns = sec * _NS_PER_SEC
        if not _I64_MIN <= ns <= _I64_MAX:
            raise OverflowError("timestamp too large")
        return ns
    except Exception:
        raise TypeError("timeout argument must be a number or None, got %s"
                        % type(obj).__name__) from None


class kqueue(object):
    """kqueue()

    A kernel event queue served by kqueued: each instance opens the kqueue
    device ($KQUEUE_DEVICE or /dev/kqueue) once and checks the daemon's ABI
    version. The descriptor is non-inheritable (O_CLOEXEC); unlike BSD, the
    queue is shared with children made by fork().
    """

    # _inline: whether control() may use the inline kevent (the daemon speaks
    # ABI 3 and KQUEUE_INLINE is not 0); None until known (fromfd).
    # _local: the fast path's state (_local.LocalQueue: the daemon speaks
    # ABI 4, KQUEUE_LOCAL is not 0, and the attach worked), else None.
    __slots__ = ("_fd", "_inline", "_local", "__weakref__")

    def __new__(cls, *args, **kwargs):
        if args:
            raise TypeError("kqueue() takes no positional arguments")
        if kwargs:
            raise TypeError("kqueue() takes no keyword arguments")
        self = object.__new__(cls)
        self._fd = -1
        self._inline = False
        self._local = None
        self._fd, abi = _open_kqueue_fd()
        self._inline = abi >= _abi.KQ_ABI_INLINE and _inline_allowed()
        if abi >= _abi.KQ_ABI_LOCAL and _local.local_allowed():
            try:
                self._local = _local.LocalQueue(self._fd)
            except OSError:
                pass  # e.g. ENOTTY, EBUSY: the ioctl path
        return self

    def __init__(self, *args, **kwargs):
        pass

    @classmethod
    def fromfd(cls, fd, /):
        """Create a kqueue object from a given control fd (which it owns
        from then on: close() closes it)."""
        fd = _c_int(fd)
        if fd < 0:
            raise ValueError("file descriptor cannot be a negative integer "
                             "(%d)" % fd)
        self = object.__new__(cls)
        self._fd = fd
        self._inline = None  # asked on the first control()
        self._local = None  # not made here: the ioctl path
        return self

    def _inline_known(self, fd):
        """Whether control() may use the inline kevent; for a kqueue made by
        fromfd(), asks the daemon's version once (any error: no)."""
        inline = self._inline
        if inline is None:
            inline = False
            if _inline_allowed():
                try:
                    abi, _ = _query_version(fd)
                    inline = abi >= _abi.KQ_ABI_INLINE
                except OSError:
                    pass
            self._inline = inline
        return inline

    def _check_open(self):
        if self._fd < 0:
            raise ValueError("I/O operation on closed kqueue object")

    @property
    def closed(self):
        """True if the kqueue handler is closed."""
        return self._fd < 0

    def fileno(self):
        """Return the kqueue control file descriptor."""
        self._check_open()
        return self._fd

    def close(self):
        """Close the kqueue control file descriptor.

        Further operations on the kqueue object will raise an exception.
        Closing twice is harmless."""
        fd = self._fd
        if fd >= 0:
            self._fd = -1
            local = self._local
            if local is not None:
                self._local = None
                local.close()
            try:
                _os.close(fd)
            except OSError:
                # CPython's close() never reports close(2) errors either.
                pass

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        if self._fd < 0:
            return "<kqueued.kqueue closed>"
        return "<kqueued.kqueue fd=%d>" % self._fd

    def __reduce__(self):
        raise TypeError("cannot pickle 'kqueued.kqueue' object")

    def control(self, changelist, maxevents, timeout=None, /):
        """control(changelist, max_events[, timeout]) -> eventlist

        Calls kevent: applies ``changelist`` (an iterable of kevent objects,
        or None), then returns up to ``max_events`` events as a list of
        kevent objects. ``timeout`` is in seconds (floats allowed); None
        waits forever. Interrupted by a signal, the call is retried with the
        remaining time (PEP 475) unless a signal handler raises.
        """
        maxevents = _c_int(maxevents)
        self._check_open()
        if maxevents < 0:
            raise ValueError("Length of eventlist must be 0 or positive, got %d"
                             % maxevents)

        timeout_ns = None
        if timeout is not None:
            timeout_ns = _timeout_to_ns(timeout)
            if timeout_ns < 0:
                raise ValueError("timeout must be positive or None")

        items = ()
        if changelist is not None:
            try:
                items = list(changelist)
            except TypeError:
                raise TypeError("changelist is not iterable") from None
            if len(items) > _INT_MAX:
                raise OverflowError("changelist is too long")
            for ev in items:
                if not isinstance(ev, kevent):
                    raise TypeError("changelist must be an iterable of "
                                    "kqueued.kevent objects")

        fd = self._fd
        deadline = None
        if timeout_ns is not None:
            deadline = _time.monotonic_ns() + timeout_ns
        inline = self._inline_known(fd)
        local = self._local
        if local is not None and local.usable:
            return _control_local(fd, inline, local, items, maxevents,
                                  timeout_ns, deadline)
        return _send(fd, inline, items, None, maxevents, timeout_ns,
                     deadline, 0)


def _send(fd, inline, items, marks, maxevents, timeout_ns, deadline, flags):
    """One kevent ioctl: inline if allowed and the records fit, else
    KQ_IOC_KEVENT. `marks`: each change's `reserved` (or None: zeros);
    `flags`: KQ_KEVENT_* beyond KQ_KEVENT_KQFD and KQ_KEVENT_TIMEOUT."""
    if inline:
        chosen = _inline_request(len(items), maxevents)
        if chosen is not None:
            return _control_inline(fd, chosen, items, marks, maxevents,
                                   timeout_ns, deadline, flags)
    return _control_pointer(fd, items, marks, maxevents, timeout_ns,
                            deadline, flags)


def _remaining_ns(deadline):
    """The timeout left until `deadline` (None: forever), at least 0."""
    if deadline is None:
        return None
    left = deadline - _time.monotonic_ns()
    return left if left > 0 else 0


def _wait_local(local, room, deadline):
    """Collects from the epoll instance until something fires or the
    deadline passes: a list of kevents, or _local.ASK_DAEMON."""
    while True:
        left = _remaining_ns(deadline)
        got = local.collect(room, -1 if left is None else left / 1e9,
                            kevent._from_values)
        if got is _local.ASK_DAEMON or got is _local.CLOSED or got:
            return got
        if left == 0:
            return got
        # Only reports that did not fire (drained meanwhile, replaced
        # items): wait again for the time left.


_LOCAL_CALL = _abi.KQ_KEVENT_LOCAL_CHANGES
_SKIP_CALL = _abi.KQ_KEVENT_LOCAL_CHANGES | _abi.KQ_KEVENT_SKIP_LOCAL


def _control_local(fd, inline, local, items, maxevents, timeout_ns, deadline):
    """kqueue.control with the fast path (_local): the daemon gets every
    change, with the eligible ones marked KQ_CHANGE_LOCAL; events of local
    knotes come from the epoll instance, the rest from the daemon, which
    answers the whole call whenever its item says it holds a knote that is
    not local."""
    if maxevents == 0 and len(items) > 1 and local.names_fd_knotes(items):
        return _changes_one_by_one(fd, inline, local, items)
    marks, plan = local.prepare(items) if items else (None, ())
    if maxevents == 0 or not local.has_items():
        # Nothing to collect, or nothing local to collect (no pipe knote,
        # none added now): one ordinary call, as without the fast path.
        try:
            got = _send(fd, inline, items, marks, maxevents, timeout_ns,
                        deadline, _LOCAL_CALL)
        except OSError as e:
            local.settle_failed(plan, items, e)
            raise
        except BaseException:
            local.abandon(plan)
            raise
        local.settle(plan, items, got)
        return got
    if items:
        try:
            got = _send(fd, inline, items, marks, maxevents, 0, None,
                        _SKIP_CALL)
        except OSError as e:
            local.settle_failed(plan, items, e)
            raise
        except BaseException:
            local.abandon(plan)
            raise
        local.settle(plan, items, got)
        # A call that answers EV_ERROR records (errors, receipts) returns
        # them alone: the daemon collects no events then.
        if got and (len(got) == maxevents or got[0]._flags & _abi.EV_ERROR):
            return got
        # The daemon gave every ready knote that is not local (there was
        # room): add the local ones, whatever the daemon's item says.
        more = _local.ASK_DAEMON
        if local.usable:
            more = local.collect(maxevents - len(got), 0,
                                 kevent._from_values, got)
        if more is _local.CLOSED:
            raise OSError(_errno.EBADF, _os.strerror(_errno.EBADF))
        if more is _local.ASK_DAEMON:  # the fast path gave up meanwhile
            if got:
                return got
            return _send(fd, inline, (), None, maxevents,
                         _remaining_ns(deadline), deadline, 0)
        if got or more or timeout_ns == 0:
            return got + more
        # Nothing yet: wait (the daemon answers if its item is ready).
    if timeout_ns == 0:
        mine = local.collect(maxevents, 0, kevent._from_values)
    else:
        mine = _wait_local(local, maxevents, deadline)
    if mine is _local.CLOSED:
        # Closed by another thread while this one waited, as a call parked
        # in the daemon ends.
        raise OSError(_errno.EBADF, _os.strerror(_errno.EBADF))
    if mine is not _local.ASK_DAEMON:
        return mine
    # The daemon answers: one ordinary call for the time left.
    return _send(fd, inline, (), None, maxevents, _remaining_ns(deadline),
                 deadline, _LOCAL_CALL if local.usable else 0)


def _changes_one_by_one(fd, inline, local, items):
    """control(items, 0) for several changes, some of READ/WRITE knotes:
    one ioctl per change, so that a failure says which change failed (one
    call that fails leaves unknown which of its changes applied, and the
    fast path would have to give up). The same semantics as one call with
    no room: in order; the first error fails the call, the changes before
    it applied and the rest not; a receipt (no room for it) stops after its
    own change. (The daemon does not apply a changelist atomically either.)
    Each change is prepared just before it goes, knowing what the earlier
    ones did."""
    for ev in items:
        one = (ev,)
        marks, plan = local.prepare(one)
        try:
            _send(fd, inline, one, marks, 0, 0, None, _LOCAL_CALL)
        except OSError as e:
            local.settle_failed(plan, one, e)
            raise
        except BaseException:
            local.abandon(plan)
            raise
        local.settle(plan, one, ())
        if ev._flags & _abi.EV_RECEIPT:
            break
    return []


def _retry_timeout(deadline):
    """After EINTR: the (sec, nsec) left until `deadline`, None if it passed."""
    remaining = deadline - _time.monotonic_ns()
    if remaining < 0:
        return None
    return divmod(remaining, _NS_PER_SEC)


def _control_pointer(fd, items, marks, maxevents, timeout_ns, deadline,
                     flags):
    """kqueue.control through KQ_IOC_KEVENT: the daemon reads the changes
    from, and writes the events into, ctypes arrays in this process."""
    nchanges = len(items)
    changes = None
    if nchanges:
        changes = (_abi.KqKevent * nchanges)()
        for i, ev in enumerate(items):
            ev._to_record(changes[i])
            if marks is not None:
                changes[i].reserved = marks[i]
    events = (_abi.KqKevent * maxevents)() if maxevents else None

    args = _kevent_args(fd)
    args.changelist = ctypes.addressof(changes) if changes is not None else 0
    args.nchanges = nchanges
    args.eventlist = ctypes.addressof(events) if events is not None else 0
    args.nevents = maxevents
    args.flags |= flags
    if timeout_ns is not None:
        args.timeout_sec, args.timeout_nsec = divmod(timeout_ns, _NS_PER_SEC)
        args.flags |= _abi.KQ_KEVENT_TIMEOUT

    while True:
        try:
            got = _fcntl.ioctl(fd, _abi.KQ_IOC_KEVENT, args, True)
            break
        except InterruptedError:
            # A signal arrived while the call waited; its Python handler
            # has run already (had it raised, we would not be here). The
            # daemon applied the changes before it started waiting, so the
            # retry only waits: applying them twice could fail (a second
            # EV_DELETE is ENOENT).
            args.changelist = 0
            args.nchanges = 0
            if deadline is not None:
                left = _retry_timeout(deadline)
                if left is None:
                    return []
                args.timeout_sec, args.timeout_nsec = left
        except ConnectionAbortedError:
            # The daemon went away while the call was parked (docs/abi.md):
            # the same ENOTCONN as a call made after it left.
            raise OSError(_errno.ENOTCONN,
                          _os.strerror(_errno.ENOTCONN)) from None

    return [kevent._from_record(events[i]) for i in range(got)]


# fcntl.ioctl(fd, request, bytearray, True) copies an argument of up to 1024
# bytes through a local buffer and releases the GIL for the call; a larger
# bytearray it passes as is and keeps the GIL (so no other thread can resize
# it), which would stop every thread while a call waits. Inline arguments
# beyond this size (capacities 64 and 408) go through libc's ioctl by ctypes
# instead, which releases the GIL.
_FCNTL_LOCAL_BUFFER = 1024
_libc_ioctl = None


def _ioctl_releasing_gil(fd, request, buf):
    """ioctl(fd, request, buf) for a bytearray of any size, with the GIL
    released while it runs; errors as fcntl.ioctl raises them (OSError of
    the errno's subclass, after the signal handlers ran on EINTR)."""
    global _libc_ioctl
    if _libc_ioctl is None:
        f = ctypes.CDLL(None, use_errno=True).ioctl
        f.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
        f.restype = ctypes.c_int
        _libc_ioctl = f
    arg = (ctypes.c_char * len(buf)).from_buffer(buf)
    ret = _libc_ioctl(fd, request, ctypes.addressof(arg))
    del arg
    if ret < 0:
        err = ctypes.get_errno()
        if err == _errno.EINTR:
            # What fcntl.ioctl does before it raises InterruptedError: run
            # the Python signal handlers now; one that raises ends the call.
            _check_signals()
        raise OSError(err, _os.strerror(err))
    return ret


def _check_signals():
    # PyErr_CheckSignals runs the pending handlers; called through
    # ctypes.pythonapi (GIL held), an exception it leaves set is raised here.
    f = ctypes.pythonapi.PyErr_CheckSignals
    f.argtypes = ()
    f.restype = ctypes.c_int
    f()


_KEVENT_PACK_INTO = _abi.KEVENT_STRUCT.pack_into
_KEVENT_ITER_UNPACK = _abi.KEVENT_STRUCT.iter_unpack
_KEVENT_SIZE = _abi.KEVENT_STRUCT.size
_INLINE_HEADER_PACK_INTO = _abi.KEVENT_INLINE_STRUCT.pack_into
_INLINE_HEADER_SIZE = _abi.KEVENT_INLINE_STRUCT.size


def _control_inline(fd, chosen, items, marks, maxevents, timeout_ns, deadline,
                    flags):
    """kqueue.control through KQ_IOC_KEVENT_INLINE_<capacity> (ABI 3): the
    header and the records travel inside the ioctl's argument, a bytearray
    that the kernel copies in and that comes back holding the
    events at ev[0, result), over the changes (the daemon copies every change
    before it writes any event)."""
    capacity, request = chosen
    buf = bytearray(_INLINE_HEADER_SIZE + capacity * _KEVENT_SIZE)
    offset = _INLINE_HEADER_SIZE
    for i, ev in enumerate(items):
        _KEVENT_PACK_INTO(buf, offset, ev._ident, ev._filter, ev._flags,
                          ev._fflags, marks[i] if marks is not None else 0,
                          ev._data, ev._udata)
        offset += _KEVENT_SIZE

    flags |= _abi.KQ_KEVENT_KQFD
    sec = nsec = 0
    if timeout_ns is not None:
        flags |= _abi.KQ_KEVENT_TIMEOUT
        sec, nsec = divmod(timeout_ns, _NS_PER_SEC)
    _INLINE_HEADER_PACK_INTO(buf, 0, len(items), maxevents, flags, fd,
                             sec, nsec)

    while True:
        try:
            if len(buf) <= _FCNTL_LOCAL_BUFFER:
                # mutate_flag: the answer is copied back into buf.
                got = _fcntl.ioctl(fd, request, buf, True)
            else:
                got = _ioctl_releasing_gil(fd, request, buf)
            break
        except InterruptedError:
            # As in _control_pointer: the changes were applied before the
            # call waited, so the retry only waits, for the time left.
            if deadline is not None:
                left = _retry_timeout(deadline)
                if left is None:
                    return []
                sec, nsec = left
            _INLINE_HEADER_PACK_INTO(buf, 0, 0, maxevents, flags, fd,
                                     sec, nsec)
        except ConnectionAbortedError:
            raise OSError(_errno.ENOTCONN,
                          _os.strerror(_errno.ENOTCONN)) from None

    if not 0 <= got <= maxevents:
        raise OSError(_errno.EPROTO, "the daemon answered %d events for "
                      "room of %d" % (got, maxevents))
    end = _INLINE_HEADER_SIZE + got * _KEVENT_SIZE
    make = kevent._from_values
    return [make(*rec) for rec in
            _KEVENT_ITER_UNPACK(buf[_INLINE_HEADER_SIZE:end])]


# ---- NetBSD's KFILTER ioctls and the version handshake ----------------------


def _fd_of(kq):
    if isinstance(kq, int):
        return kq
    return kq.fileno()


def _name_bytes(name):
    if isinstance(name, str):
        b = name.encode("utf-8", "surrogateescape")
    elif isinstance(name, (bytes, bytearray, memoryview)):
        b = bytes(name)
    else:
        raise TypeError("filter name must be str or bytes, not %s"
                        % type(name).__name__)
    if b"\0" in b:
        raise ValueError("embedded null byte")
    return b


def filter_by_name(kq, name):
    """KFILTER_BYNAME: the number of the filter called ``name`` (str or
    bytes), e.g. filter_by_name(kq, "EVFILT_READ") == KQ_FILTER_READ.

    ``kq`` is a kqueue object or a kqueue descriptor. OSError ENOENT for an
    unknown name, ENAMETOOLONG for a name of KFILTER_MAXNAME bytes or more.
    """
    fd = _fd_of(kq)
    buf = ctypes.create_string_buffer(_name_bytes(name))  # NUL-terminated
    m = _abi.KfilterMapping()
    m.name = ctypes.addressof(buf)
    m.len = 0  # ignored by BYNAME
    _fcntl.ioctl(fd, _abi.KFILTER_BYNAME, m, True)
    return m.filter


def filter_name(kq, filter, size=KFILTER_MAXNAME):
    """KFILTER_BYFILTER: the name (str) of filter number ``filter``.

    ``size`` is the name buffer handed to the daemon, terminating NUL
    included. OSError ENOENT for an unknown filter, ENAMETOOLONG if the name
    does not fit in ``size`` bytes.
    """
    fd = _fd_of(kq)
    size = _operator.index(size)
    if size < 0:
        raise ValueError("size must be 0 or positive")
    buf = ctypes.create_string_buffer(size) if size else None
    m = _abi.KfilterMapping()
    m.name = ctypes.addressof(buf) if buf is not None else 0
    m.len = size
    m.filter = _masked(filter, _U32)
    _fcntl.ioctl(fd, _abi.KFILTER_BYFILTER, m, True)
    if buf is None:
        return ""
    return buf.value.decode("utf-8", "surrogateescape")


def daemon_version(kq):
    """KQ_IOC_VERSION: (abi_version, daemon version string)."""
    return _query_version(_fd_of(kq))
