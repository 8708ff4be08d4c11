"""The fast path: pipe knotes this process collects itself (ABI 4).

proto/kqueue_abi.h, "Knotes the owner collects itself (ABI 4)", is the
contract; the C library (client/kqueue.c) follows the same design. A kqueue
made by kqueued.kqueue() in this process owns a select.epoll instance and
names it to the daemon (KQ_IOC_LOCAL_ATTACH); the daemon adds one item of
its own to it (tag DAEMON_TAG), readable exactly while the queue holds a
knote that is not local. The module then registers in that epoll instance
itself the level-triggered EVFILT_READ / EVFILT_WRITE knotes it adds on
pipes and FIFOs (marking those changes KQ_CHANGE_LOCAL), and answers calls
whose knotes are all such from the epoll instance, without the daemon. The
daemon stays the owner of every knote: every change still goes to it.

What is local, and how an epoll report becomes a kevent, mirrors the
daemon's pipe filters (daemon/filters/fd/fd_readiness.cc, PipeRead and
PipeWrite) exactly, so that data, EV_EOF, flags and udata equal what the
daemon would return. Whenever this module cannot be sure what the daemon
holds (a failed call that carried several changes, a report of an epoll
item whose descriptor is gone), the queue goes to the ioctl path for good:
correct, slower.

Items carry their own 32-bit ids in epoll_data (select.epoll.poll reports
data.fd), not the descriptor number, so a report of an item that was
replaced is recognised; they are added and modified through libc's
epoll_ctl (ctypes), as select.epoll.register would store the descriptor.

fork(): in the child every such queue goes to the ioctl path (the daemon
ignores KQ_KEVENT_SKIP_LOCAL from a process that is not the local owner
anyway). A kqueue made by kqueue.fromfd() (e.g. received over SCM_RIGHTS) has
no local state: ioctl path.
"""

import ctypes
import errno as _errno
import fcntl as _fcntl
import os as _os
import select as _select
import stat as _stat
import struct as _struct
import termios as _termios
import threading as _threading
import weakref as _weakref

from kqueued import _abi

# KQUEUE_LOCAL=0 in the environment, read at each kqueue(), disables the
# fast path (the suites and the benchmark compare both).
LOCAL_ENV = "KQUEUE_LOCAL"

# The daemon's item: epoll_data.u64 of its eventfd. Our items' ids are
# 1 .. 2**31 - 1, so 0 is never one of them.
DAEMON_TAG = 0

_EPOLLIN = _select.EPOLLIN
_EPOLLOUT = _select.EPOLLOUT
_EPOLLERR = _select.EPOLLERR
_EPOLLHUP = _select.EPOLLHUP
_EPOLL_CTL_ADD = 1
_EPOLL_CTL_DEL = 2
_EPOLL_CTL_MOD = 3

_FIONREAD = _termios.FIONREAD
_F_GETPIPE_SZ = getattr(_fcntl, "F_GETPIPE_SZ", 1032)
# The daemon's kPipeWriteLowat: BSD fires a pipe's WRITE when an atomic
# write (PIPE_BUF bytes) fits.
_PIPE_WRITE_LOWAT = _select.PIPE_BUF

_READ = _abi.EVFILT_READ
_WRITE = _abi.EVFILT_WRITE
_EV_ADD = _abi.EV_ADD
_EV_DELETE = _abi.EV_DELETE
_EV_ENABLE = _abi.EV_ENABLE
_EV_DISABLE = _abi.EV_DISABLE
_EV_RECEIPT = _abi.EV_RECEIPT
_EV_EOF = _abi.EV_EOF
_EV_ERROR = _abi.EV_ERROR
_EV_SYSFLAGS = _abi.EV_SYSFLAGS
# A knote with one of these is never local (the contract).
_NOT_LOCAL_FLAGS = _abi.EV_CLEAR | _abi.EV_ONESHOT | _abi.EV_DISPATCH
_INT_MAX = (1 << 31) - 1

# struct kq_local_attach: epoll_fd, flags, tag, reserved.
_ATTACH = _struct.Struct("<iIQQ")
# struct epoll_event: packed on x86-64 only (the kernel's EPOLL_PACKED).
_EPOLL_EVENT = _struct.Struct(
    "=IQ" if _os.uname().machine == "x86_64" else "=I4xQ")
_INT = _struct.Struct("i")
_ZERO_INT = bytes(_INT.size)

_epoll_ctl_fn = None


def _epoll_ctl(epfd, op, fd, events, data):
    """epoll_ctl(2) with our own epoll_data; OSError on failure."""
    global _epoll_ctl_fn
    if _epoll_ctl_fn is None:
        f = ctypes.CDLL(None, use_errno=True).epoll_ctl
        f.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p)
        f.restype = ctypes.c_int
        _epoll_ctl_fn = f
    if _epoll_ctl_fn(epfd, op, fd, _EPOLL_EVENT.pack(events, data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, _os.strerror(err))


def _fionread(fd):
    try:
        n = _INT.unpack(_fcntl.ioctl(fd, _FIONREAD, _ZERO_INT))[0]
    except OSError:
        return 0
    return n if n > 0 else 0


def local_allowed():
    return _os.environ.get(LOCAL_ENV) != "0"


# Per (fd, filter) slot of an item.
_NONE = 0
_PENDING = 1  # marked change in flight: not reported until it is settled
_LOCAL = 2

_MASK = {_READ: _EPOLLIN, _WRITE: _EPOLLOUT}


class _Knote(object):
    """What this module knows of a READ/WRITE knote it made on a FIFO: its
    file's identity and what the daemon reports for it."""

    __slots__ = ("identity", "flags", "udata", "disabled")

    def __init__(self, identity, flags, udata, disabled):
        self.identity = identity  # (st_dev, st_ino, accmode)
        self.flags = flags        # the creation change's, EV_SYSFLAGS cleared
        self.udata = udata
        self.disabled = disabled


class _Item(object):
    """One epoll item: a descriptor and the state of its two slots."""

    __slots__ = ("id", "fd", "identity", "read", "write", "write_first")

    def __init__(self, item_id, fd, identity):
        self.id = item_id
        self.fd = fd
        self.identity = identity
        self.read = _NONE
        self.write = _NONE
        # With room for one of its two events, the one left out goes first
        # next time (the daemon's queue takes turns too).
        self.write_first = False

    def slot(self, filt):
        return self.read if filt == _READ else self.write

    def set_slot(self, filt, state):
        if filt == _READ:
            self.read = state
        else:
            self.write = state

    def mask(self):
        m = 0
        if self.read != _NONE:
            m |= _EPOLLIN
        if self.write != _NONE:
            m |= _EPOLLOUT
        return m


def _disabled_after(flags, disabled):
    """A knote's disabled state after a change with `flags` (EV_DISABLE
    first, then EV_ENABLE, as the daemon applies them)."""
    if flags & _EV_DISABLE:
        disabled = True
    if flags & _EV_ENABLE:
        disabled = False
    return disabled


def _identity(fd):
    """(identity, is_fifo) of fd, or (None, False) if it cannot be read."""
    try:
        st = _os.fstat(fd)
    except OSError:
        return None, False
    if not _stat.S_ISFIFO(st.st_mode):
        return (st.st_dev, st.st_ino, -1), False
    try:
        acc = _fcntl.fcntl(fd, _fcntl.F_GETFL) & _os.O_ACCMODE
    except OSError:
        return None, False
    return (st.st_dev, st.st_ino, acc), True


# What a collection tells its caller besides events: ask the daemon; the
# kqueue was closed (by another thread) before or while it waited.
ASK_DAEMON = None
CLOSED = False
# The item of the close wake-up: never a knote's id (those stop below it).
_WAKE_ID = _INT_MAX
# Written to the wake-up descriptor: an eventfd's 8-byte increment (a pipe
# takes it as well).
_WAKE_BYTES = _struct.pack("=Q", 1)

# Every LocalQueue of this process, for the fork handler.
_QUEUES = _weakref.WeakSet()


class LocalQueue(object):
    """The local state of one kqueue: its epoll instance, the items in it
    and the knotes it knows. Thread-safe; `_lock` is never held across a
    blocking wait or a kevent ioctl."""

    def __init__(self, kq_fd):
        """Creates the epoll instance and attaches it to the kqueue
        `kq_fd`; OSError (ENOTTY from a daemon older than ABI 4, EBUSY...)
        if that fails."""
        ep = _select.epoll()
        try:
            _fcntl.ioctl(kq_fd, _abi.KQ_IOC_LOCAL_ATTACH,
                         _ATTACH.pack(ep.fileno(), 0, DAEMON_TAG, 0))
        except BaseException:
            ep.close()
            raise
        # Written by close(): wakes the threads waiting in ep.poll (closing
        # the epoll descriptor would not). Closed with this object, once no
        # waiter holds it.
        try:
            if hasattr(_os, "eventfd"):  # Python 3.10
                wake_r = wake_w = _os.eventfd(
                    0, _os.EFD_CLOEXEC | _os.EFD_NONBLOCK)
            else:
                wake_r, wake_w = _os.pipe2(_os.O_CLOEXEC | _os.O_NONBLOCK)
        except BaseException:
            ep.close()
            raise
        self._wake_r = wake_r
        self._wake_w = wake_w
        try:
            _epoll_ctl(ep.fileno(), _EPOLL_CTL_ADD, wake_r, _EPOLLIN, _WAKE_ID)
        except BaseException:
            self._close_wake()
            ep.close()
            raise
        self._ep = ep
        self._epfd = ep.fileno()
        # Guards everything below, and `usable`'s change to False.
        self._lock = _threading.Lock()
        self._items = {}    # fd -> _Item
        self._by_id = {}    # item id -> _Item
        self._retired = set()  # ids of items whose removal could not be done
        self._knotes = {}   # (fd, filter) -> _Knote
        self._next_id = 1
        self.closed = False
        # False for good once the fast path cannot be trusted (then every
        # call goes to the daemon without the ABI 4 flags).
        self.usable = True
        _QUEUES.add(self)

    def close(self):
        """At kqueue.close(): waiters return CLOSED, later calls too."""
        self.usable = False
        self.closed = True
        try:
            _os.write(self._wake_w, _WAKE_BYTES)
        except OSError:
            pass
        self._ep.close()

    def _close_wake(self):
        for fd in {self._wake_r, self._wake_w}:
            if fd >= 0:
                try:
                    _os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1

    def __del__(self):
        try:
            self._close_wake()
        except Exception:
            pass

    def names_fd_knotes(self, changes):
        """Whether any change names a READ or WRITE knote."""
        for ev in changes:
            if ev._filter == _READ or ev._filter == _WRITE:
                return True
        return False

    def has_items(self):
        """Whether any knote is (or is being made) local: else there is
        nothing to collect here."""
        return bool(self._by_id)

    def give_up(self):
        """The ioctl path from now on. The epoll instance stays open until
        close(): another thread may be waiting on it."""
        self.usable = False

    def _after_fork_in_child(self):
        # Only this thread runs: the lock may be held by a thread that
        # does not exist here, so it is not taken.
        self.usable = False
        try:
            self._ep.close()
        except OSError:
            pass

    # ---- Changes ------------------------------------------------------------

    def prepare(self, changes):
        """Before a call carrying `changes` (kevent objects): registers the
        epoll items of the eligible ones and returns (marks, plan): the
        `reserved` value of each change, and what settle() must look at."""
        marks = [0] * len(changes)
        plan = []
        # What the knotes will be after each change, assuming the earlier
        # changes of this call apply (a later change's eligibility depends
        # on them: [EV_ADD|EV_DISABLE, EV_ADD] leaves the knote disabled).
        # key -> _Knote, or None: no knote (or not one on a FIFO).
        sim = {}
        with self._lock:
            if not self.usable:
                return marks, plan
            for i, ev in enumerate(changes):
                filt = ev._filter
                fd = ev._ident
                if (filt != _READ and filt != _WRITE) or fd > _INT_MAX:
                    continue
                key = (fd, filt)
                flags = ev._flags
                kn = sim[key] if key in sim else self._knotes.get(key)
                if flags & _EV_ADD:
                    identity, fifo = _identity(fd)
                    if kn is not None and kn.identity != identity:
                        kn = None  # the old file's knote: a new one now
                    marked = fifo and self._eligible(key, identity, ev, kn)
                    if marked:
                        marked = self._register(fd, filt, identity)
                    if marked:
                        marks[i] = _abi.KQ_CHANGE_LOCAL
                    if (marked or fifo or key in self._knotes or key in sim
                            or self._has_slot(fd, filt)):
                        plan.append((i, key, identity if fifo else None,
                                     marked))
                    if not fifo:
                        sim[key] = None
                    elif kn is None:
                        sim[key] = _Knote(
                            identity, flags & ~_EV_SYSFLAGS, ev._udata,
                            _disabled_after(flags, False))
                    else:
                        sim[key] = _Knote(kn.identity, kn.flags, ev._udata,
                                          _disabled_after(flags, kn.disabled))
                elif (key in self._knotes or key in sim
                      or self._has_slot(fd, filt)):
                    plan.append((i, key, None, False))
                    if flags & _EV_DELETE:
                        sim[key] = None
                    elif kn is not None:
                        sim[key] = _Knote(kn.identity, kn.flags, kn.udata,
                                          _disabled_after(flags, kn.disabled))
        return marks, plan

    def _has_slot(self, fd, filt):
        item = self._items.get(fd)
        return item is not None and item.slot(filt) != _NONE

    def _eligible(self, key, identity, ev, kn):
        """Whether the EV_ADD `ev` leaves a knote the daemon makes local;
        kn: the knote before it (same file), or None for a new one."""
        flags = ev._flags
        if ev._fflags != 0 or flags & (_NOT_LOCAL_FLAGS | _EV_DISABLE):
            return False
        acc = identity[2]
        if key[1] == _READ and acc == _os.O_WRONLY:
            return False
        if key[1] == _WRITE and acc == _os.O_RDONLY:
            return False
        if kn is not None:
            # An existing knote keeps its flags, and stays disabled unless
            # this change enables it: then the daemon would not make it
            # local.
            if kn.flags & _NOT_LOCAL_FLAGS:
                return False
            if kn.disabled and not flags & _EV_ENABLE:
                return False
        return True

    def _register(self, fd, filt, identity):
        """Puts (fd, filt) in the epoll instance (slot pending, or left
        local if it is); False if epoll refuses."""
        item = self._items.get(fd)
        if item is not None and item.identity != identity:
            # The number names another file now: the old item is dead (or
            # a zombie, if the old file lives on elsewhere).
            self._drop_item(item)
            item = None
        if item is None:
            item_id = self._new_id()
            item = _Item(item_id, fd, identity)
            item.set_slot(filt, _PENDING)
            try:
                _epoll_ctl(self._epfd, _EPOLL_CTL_ADD, fd, item.mask(), item_id)
            except OSError:
                return False
            self._items[fd] = item
            self._by_id[item_id] = item
            return True
        if item.slot(filt) != _NONE:
            return True  # already in the item's events (pending or local)
        old = item.mask()
        item.set_slot(filt, _PENDING)
        try:
            _epoll_ctl(self._epfd, _EPOLL_CTL_MOD, fd, item.mask(), item.id)
        except OSError:
            item.set_slot(filt, _NONE)
            if old == 0:
                self._drop_item(item)
            return False
        return True

    def _new_id(self):
        while True:
            item_id = self._next_id
            self._next_id = item_id + 1 if item_id < _WAKE_ID - 1 else 1
            if item_id not in self._by_id and item_id not in self._retired:
                return item_id

    def _clear_slot(self, fd, filt):
        item = self._items.get(fd)
        if item is None or item.slot(filt) == _NONE:
            return
        item.set_slot(filt, _NONE)
        mask = item.mask()
        if mask == 0:
            self._drop_item(item)
            return
        identity, _ = _identity(fd)
        if identity == item.identity:
            try:
                _epoll_ctl(self._epfd, _EPOLL_CTL_MOD, fd, mask, item.id)
                return
            except OSError:
                pass
        # The number names another file now: the other slot's knote is gone
        # too (the daemon drops it when it looks), and an item left with
        # the old mask could report for ever. Retired: if it ever reports,
        # it lives on elsewhere, and the queue goes to the ioctl path.
        self._drop_item(item)

    def _drop_item(self, item):
        """Removes item from the table and, if fd still names its file,
        from the epoll instance; else remembers its id (a later report of
        it means it lives on: a zombie)."""
        self._items.pop(item.fd, None)
        self._by_id.pop(item.id, None)
        identity, _ = _identity(item.fd)
        if identity == item.identity:
            try:
                self._ep.unregister(item.fd)
                return
            except OSError:
                pass
        self._retired.add(item.id)

    def settle(self, plan, changes, answers):
        """After the call carrying `changes` returned `answers` (kevent
        objects: its EV_ERROR records first): records what each planned
        change did. A receipt that found no room stops the daemon's
        changelist after applying itself; an error without room fails the
        call (settle_failed)."""
        if not plan:
            return
        outcome = self._outcomes(changes, answers)
        with self._lock:
            if not self.usable:
                return
            if outcome is None:
                self.usable = False
                return
            for i, key, identity, marked in plan:
                err = outcome[i]
                if err is None:
                    # Not applied (after a receipt that found no room).
                    if marked:
                        self._clear_slot(*key)
                    continue
                self._apply(changes[i], key, identity, marked, err)

    def _outcomes(self, changes, answers):
        """The errno (0: applied) of each change, None for one that was not
        applied; None as a whole if that cannot be known."""
        nans = 0
        while nans < len(answers) and answers[nans]._flags & _EV_ERROR:
            nans += 1
        # An answer is a copy of its change (flags and data replaced).
        keys = [(ev._ident, ev._filter, ev._fflags, ev._udata)
                for ev in changes]
        out = []
        j = 0
        stopped = False
        for i, ev in enumerate(changes):
            if stopped:
                out.append(None)
                continue
            receipt = ev._flags & _EV_RECEIPT
            if j < nans:
                a = answers[j]
                # Data 0 is a receipt: never the answer of a change without
                # EV_RECEIPT (errors are not 0).
                if ((a._ident, a._filter, a._fflags, a._udata) == keys[i]
                        and (receipt or a._data != 0)):
                    if not receipt and keys[i] in keys[i + 1:]:
                        # This change's error, or a later twin's after
                        # this one applied silently: unknown.
                        return None
                    out.append(a._data)
                    j += 1
                    continue
            if ev._flags & _EV_RECEIPT:
                # Applied, but its receipt found no room: the rest were not.
                out.append(0)
                stopped = True
                continue
            out.append(0)
        return out

    def abandon(self, plan):
        """After the call carrying planned changes ended with an exception
        that is not the call's error (a signal handler's, say): what the
        daemon applied is unknown."""
        if plan:
            with self._lock:
                self.usable = False

    def settle_failed(self, plan, changes, exc):
        """After the call carrying `changes` failed with `exc`: with one
        change, that change failed; with more, which applied is unknown."""
        if not plan:
            return
        with self._lock:
            if not self.usable:
                return
            if len(changes) != 1:
                self.usable = False
                return
            i, key, identity, marked = plan[0]
            self._apply(changes[i], key, identity, marked,
                        exc.errno or _errno.EIO)

    def _apply(self, ev, key, identity, marked, err):
        flags = ev._flags
        if err != 0:
            # Not applied: nothing became local (a marked change undone).
            # A knote the daemon says is not there is forgotten.
            self._clear_slot(*key)
            if err in (_errno.EBADF, _errno.ENOENT):
                self._knotes.pop(key, None)
            return
        if flags & _EV_ADD:
            if identity is None:
                self._knotes.pop(key, None)  # not a FIFO now
            else:
                kn = self._knotes.get(key)
                if kn is None or kn.identity != identity:
                    self._knotes[key] = _Knote(
                        identity, flags & ~_EV_SYSFLAGS, ev._udata,
                        _disabled_after(flags, False))
                else:
                    kn.udata = ev._udata
                    if flags & _EV_DISABLE:
                        kn.disabled = True
                    if flags & _EV_ENABLE:
                        kn.disabled = False
            if marked:
                # An earlier change of this call may have cleared the slot
                # prepare() made: the daemon has the knote local now, so
                # it must be in the epoll instance.
                item = self._items.get(key[0])
                if item is None or item.slot(key[1]) == _NONE:
                    if not self._register(key[0], key[1], identity):
                        self.usable = False  # cannot collect it: give up
                        return
                    item = self._items[key[0]]
                item.set_slot(key[1], _LOCAL)
                return
            self._clear_slot(*key)
            return
        if flags & _EV_DELETE:
            self._knotes.pop(key, None)
        else:
            kn = self._knotes.get(key)
            if kn is not None:
                if flags & _EV_DISABLE:
                    kn.disabled = True
                if flags & _EV_ENABLE:
                    kn.disabled = False
        self._clear_slot(*key)

    # ---- Collection ---------------------------------------------------------

    def collect(self, room, timeout, make_event, after_skip=None):
        """Waits up to `timeout` seconds (-1: forever) on the epoll
        instance and turns what it reports into at most `room` kevents
        (made by make_event(ident, filter, flags, fflags, reserved, data,
        udata): kevent._from_values). Returns ASK_DAEMON when the daemon
        must answer the call instead: its item is ready, or a report came
        from an item whose descriptor is gone (then the queue goes to the
        ioctl path for good); CLOSED after close().

        after_skip: the events a KQ_KEVENT_SKIP_LOCAL call just returned
        (zero timeout) — it took every other knote's ready events there was
        room for, so the daemon's item does not stop this collection, and
        no knote is reported twice."""
        # Room for the daemon's item and the wake-up besides ours; no more
        # than there are items (room may be huge).
        try:
            reports = self._ep.poll(timeout, min(room, len(self._by_id)) + 2)
        except ValueError:  # closed before this thread got to wait
            return CLOSED
        if not reports:
            return []
        for ident, _ in reports:
            if ident == DAEMON_TAG:
                if after_skip is None:
                    return ASK_DAEMON
            elif ident == _WAKE_ID:
                return CLOSED
        out = []
        with self._lock:
            if not self.usable:
                return ASK_DAEMON
            for ident, revents in reports:
                item = self._by_id.get(ident)
                if item is None:
                    if ident == DAEMON_TAG:
                        continue
                    if ident in self._retired:
                        # An item we could not remove reports: its file
                        # lives on under no descriptor we can name.
                        self.usable = False
                        return ASK_DAEMON
                    continue  # replaced while this thread waited
                fd = item.fd
                try:
                    st = _os.fstat(fd)
                    same = (st.st_dev == item.identity[0]
                            and st.st_ino == item.identity[1])
                except OSError:
                    same = False
                if not same:
                    # A ghost: fd was closed or names another file, and
                    # its old item cannot be removed any more.
                    self.usable = False
                    return ASK_DAEMON
                taken = ()
                if after_skip:
                    # (Only if this module and the daemon disagreed on
                    # what is local could the daemon have answered it.)
                    taken = {(e._ident, e._filter) for e in after_skip}
                read = item.read == _LOCAL and (fd, _READ) not in taken
                write = item.write == _LOCAL and (fd, _WRITE) not in taken
                if item.write_first:
                    if write and len(out) < room:
                        self._write_event(item, revents, out, make_event)
                        item.write_first = False
                    if read and len(out) < room:
                        self._read_event(item, revents, out, make_event)
                    continue
                if read and len(out) < room:
                    self._read_event(item, revents, out, make_event)
                if write:
                    if len(out) < room:
                        self._write_event(item, revents, out, make_event)
                    else:
                        item.write_first = True
        return out

    def _read_event(self, item, revents, out, make_event):
        # PipeRead: a pipe polls POLLIN exactly when it holds data.
        fd = item.fd
        data = 0
        if revents & _EPOLLIN:
            try:
                data = _INT.unpack(_fcntl.ioctl(fd, _FIONREAD, _ZERO_INT))[0]
            except OSError:
                data = 0
        eof = revents & _EPOLLHUP
        if not eof and data <= 0:
            return  # drained meanwhile
        kn = self._knotes.get((fd, _READ))
        if kn is None:
            return
        flags = kn.flags | _EV_EOF if eof else kn.flags
        out.append(make_event(fd, _READ, flags, 0, 0, data, kn.udata))

    def _write_event(self, item, revents, out, make_event):
        # PipeWrite: EV_EOF with data 0 once the last reader is gone; else
        # the room left, reported from PIPE_BUF bytes on.
        fd = item.fd
        kn = self._knotes.get((fd, _WRITE))
        if kn is None:
            return
        if revents & _EPOLLERR:
            out.append(make_event(fd, _WRITE, kn.flags | _EV_EOF, 0, 0, 0,
                                  kn.udata))
            return
        if not revents & _EPOLLOUT:
            return
        try:
            size = _fcntl.fcntl(fd, _F_GETPIPE_SZ)
        except OSError:
            return
        data = size - _fionread(fd)
        if data > 0 and data >= _PIPE_WRITE_LOWAT:
            out.append(make_event(fd, _WRITE, kn.flags, 0, 0, data, kn.udata))


def _after_fork_in_child():
    for q in list(_QUEUES):
        q._after_fork_in_child()


_os.register_at_fork(after_in_child=_after_fork_in_child)
