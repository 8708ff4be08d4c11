"""The fast path (ABI 4, kqueued/_local.py): level-triggered READ/WRITE knotes
on pipes and FIFOs are collected from the module's own epoll instance, and
must be indistinguishable from what the daemon answers (KQUEUE_LOCAL=0).

The whole suite also runs with KQUEUE_LOCAL=0 (python_client_ioctl_test):
there the tests that need the fast path skip, the comparisons still run.
"""

import errno
import os
import stat
import struct
import tempfile
import threading
import time

import pytest

import kqueued
from kqueued import _abi, kevent

from kq_helpers import Pipe, require_filter

READ = kqueued.KQ_FILTER_READ
WRITE = kqueued.KQ_FILTER_WRITE
TIMER = kqueued.KQ_FILTER_TIMER
ADD = kqueued.KQ_EV_ADD
DELETE = kqueued.KQ_EV_DELETE
ENABLE = kqueued.KQ_EV_ENABLE
DISABLE = kqueued.KQ_EV_DISABLE
RECEIPT = kqueued.KQ_EV_RECEIPT
CLEAR = kqueued.KQ_EV_CLEAR
EOF = kqueued.KQ_EV_EOF


def _fields(e):
    return (e.ident, e.filter, e.flags, e.fflags, e.data, e.udata)


def _sorted(events):
    return sorted(_fields(e) for e in events)


def _make(monkeypatch, local):
    """A kqueue made with KQUEUE_LOCAL unset (fast path if the daemon has
    it) or =0 (the ioctl path)."""
    if local:
        monkeypatch.delenv("KQUEUE_LOCAL", raising=False)
    else:
        monkeypatch.setenv("KQUEUE_LOCAL", "0")
    q = kqueued.kqueue()
    return q


@pytest.fixture
def pair(daemon, monkeypatch):
    """(fast, ioctl): two kqueues, the first with the fast path when this
    run allows it, the second without."""
    saved = os.environ.get("KQUEUE_LOCAL")
    fast = _make(monkeypatch, saved != "0")
    slow = _make(monkeypatch, False)
    if saved is None:
        monkeypatch.delenv("KQUEUE_LOCAL", raising=False)
    else:
        monkeypatch.setenv("KQUEUE_LOCAL", saved)
    require_filter(slow, READ)
    try:
        yield fast, slow
    finally:
        fast.close()
        slow.close()


def _fast_path_expected():
    return os.environ.get("KQUEUE_LOCAL") != "0"


@pytest.fixture
def lkq(daemon):
    """A kqueue that must have the fast path (skips in the KQUEUE_LOCAL=0
    run)."""
    if not _fast_path_expected():
        pytest.skip("KQUEUE_LOCAL=0: the ioctl path is under test")
    q = kqueued.kqueue()
    try:
        abi, _ = kqueued.daemon_version(q)
        if abi < _abi.KQ_ABI_LOCAL:
            pytest.skip("the daemon speaks ABI %d (no local collection)" % abi)
        assert q._local is not None and q._local.usable
        yield q
    finally:
        q.close()


class _CountingSend(object):
    """Counts the kevent ioctls control() makes (kqueued._send)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self._real = kqueued._send
        monkeypatch.setattr(kqueued, "_send", self)

    def __call__(self, *args):
        self.calls += 1
        return self._real(*args)


@pytest.fixture
def pipe():
    p = Pipe()
    yield p
    p.close()


def _both(pair, changes, nevents=8, timeout=0):
    fast, slow = pair
    a = fast.control(changes, nevents, timeout)
    b = slow.control(changes, nevents, timeout)
    return _sorted(a), _sorted(b)


# ---- Indistinguishable from the daemon's answers ---------------------------


@pytest.mark.parametrize("flags", [ADD, ADD | ENABLE, ADD | RECEIPT])
def test_read_fields_equal_the_daemons(pair, pipe, flags):
    changes = [kevent(pipe.r, READ, flags, 0, 0, 0xfeedface12345678)]
    a, b = _both(pair, changes)
    assert a == b
    a, b = _both(pair, None)
    assert a == b == []
    os.write(pipe.w, b"hello")
    a, b = _both(pair, None)
    assert a == b and len(a) == 1 and a[0][4] == 5
    # Level-triggered, data current.
    os.write(pipe.w, b"xy")
    a, b = _both(pair, None)
    assert a == b and a[0][4] == 7
    os.read(pipe.r, 7)
    a, b = _both(pair, None)
    assert a == b == []
    os.write(pipe.w, b"z")
    pipe.close_writer()
    a, b = _both(pair, None)
    assert a == b and a[0][2] & EOF and a[0][4] == 1
    os.read(pipe.r, 1)
    a, b = _both(pair, None)
    assert a == b and a[0][2] & EOF and a[0][4] == 0


@pytest.mark.parametrize("flags", [ADD, ADD | ENABLE, ADD | RECEIPT])
def test_write_fields_equal_the_daemons(pair, pipe, flags):
    changes = [kevent(pipe.w, WRITE, flags, 0, 0, 77)]
    a, b = _both(pair, changes)
    assert a == b
    a, b = _both(pair, None)
    assert a == b and len(a) == 1
    size = a[0][4]
    os.write(pipe.w, b"x" * 1000)
    a, b = _both(pair, None)
    assert a == b and a[0][4] == size - 1000
    # Nearly full: less than PIPE_BUF left, no event from either.
    os.set_blocking(pipe.w, False)
    try:
        while True:
            os.write(pipe.w, b"y" * 4096)
    except BlockingIOError:
        pass
    a, b = _both(pair, None)
    assert a == b
    os.close(pipe.r)
    pipe.r = -1
    a, b = _both(pair, None)
    assert a == b and a[0][2] & EOF and a[0][4] == 0


def test_rdwr_fifo_both_filters_equal_the_daemons(pair):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "fifo")
    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        a, b = _both(pair, [kevent(fd, READ, ADD, 0, 0, 1),
                            kevent(fd, WRITE, ADD, 0, 0, 2)])
        assert a == b
        a, b = _both(pair, None)
        assert a == b and [e[1] for e in a] == [WRITE]
        os.write(fd, b"abc")
        a, b = _both(pair, None)
        assert a == b and len(a) == 2
        assert [e[4] for e in a if e[1] == READ] == [3]
    finally:
        os.close(fd)
        os.unlink(path)
        os.rmdir(d)


def test_readd_keeps_creation_flags_and_updates_udata(pair, pipe):
    a, b = _both(pair, [kevent(pipe.r, READ, ADD | RECEIPT, 0, 0, 1)])
    assert a == b
    a, b = _both(pair, [kevent(pipe.r, READ, ADD, 0, 0, 2)])
    assert a == b
    os.write(pipe.w, b"q")
    a, b = _both(pair, None)
    assert a == b and a[0][5] == 2 and a[0][2] & RECEIPT


def test_disabled_then_readded_stays_disabled(pair, pipe):
    _both(pair, [kevent(pipe.r, READ, ADD | DISABLE)])
    os.write(pipe.w, b"q")
    a, b = _both(pair, [kevent(pipe.r, READ, ADD)])
    assert a == b == []
    a, b = _both(pair, [kevent(pipe.r, READ, ENABLE)])
    assert a == b and len(a) == 1


def test_clear_knote_is_left_to_the_daemon(pair, pipe):
    _both(pair, [kevent(pipe.r, READ, ADD | CLEAR)])
    os.write(pipe.w, b"q")
    a, b = _both(pair, None)
    assert a == b and len(a) == 1
    a, b = _both(pair, [kevent(pipe.r, READ, ADD)])  # stays EV_CLEAR
    assert a == b
    a, b = _both(pair, None)
    assert a == b == []


def test_errors_and_receipts_equal_the_daemons(pair, pipe):
    bad = 1000
    while True:
        try:
            os.fstat(bad)
            bad += 1
        except OSError:
            break
    changes = [kevent(pipe.r, READ, ADD | RECEIPT),
               kevent(bad, READ, ADD),
               kevent(pipe.w, WRITE, ADD | RECEIPT)]
    a, b = _both(pair, changes)
    assert a == b
    assert [e[2] for e in a if e[2] & kqueued.KQ_EV_ERROR]
    fast, slow = pair
    for q in (fast, slow):
        with pytest.raises(OSError) as info:
            q.control([kevent(bad, READ, ADD)], 0)
        assert info.value.errno == errno.EBADF
    a, b = _both(pair, None)
    assert a == b and [e[1] for e in a] == [WRITE]


# ---- The fast path itself ---------------------------------------------------


def test_zero_timeout_harvest_needs_no_daemon_call(lkq, pipe, monkeypatch):
    lkq.control([kevent(pipe.r, READ, ADD, 0, 0, 9)], 0)
    os.write(pipe.w, b"abc")
    counter = _CountingSend(monkeypatch)
    for _ in range(3):
        got = lkq.control(None, 4, 0)
        assert _sorted(got) == [(pipe.r, READ, ADD, 0, 3, 9)]
    assert lkq.control(None, 4, 0) != []
    os.read(pipe.r, 3)
    assert lkq.control(None, 4, 0) == []
    assert counter.calls == 0
    assert lkq._local.usable


def test_delete_then_no_event(lkq, pipe, monkeypatch):
    other = Pipe()
    try:
        lkq.control([kevent(pipe.r, READ, ADD), kevent(other.r, READ, ADD)], 0)
        os.write(pipe.w, b"abc")
        assert len(lkq.control(None, 4, 0)) == 1
        lkq.control([kevent(pipe.r, READ, DELETE)], 0)
        counter = _CountingSend(monkeypatch)
        assert lkq.control(None, 4, 0) == []
        assert counter.calls == 0
        os.write(other.w, b"z")
        assert [e.ident for e in lkq.control(None, 4, 0)] == [other.r]
        assert counter.calls == 0
        with pytest.raises(FileNotFoundError):
            lkq.control([kevent(pipe.r, READ, DELETE)], 0)
        assert lkq._local.usable
        # With no local knote left, calls go to the daemon (which answers
        # a wait on an empty queue, and its end by close or by shutdown).
        lkq.control([kevent(other.r, READ, DELETE)], 0)
        counter.calls = 0
        assert lkq.control(None, 4, 0) == []
        assert counter.calls == 1
    finally:
        other.close()


def test_close_ends_a_local_wait_with_ebadf(daemon, pipe):
    if not _fast_path_expected():
        pytest.skip("KQUEUE_LOCAL=0: the ioctl path is under test")
    q = kqueued.kqueue()
    if q._local is None:
        q.close()
        pytest.skip("no local collection with this daemon")
    q.control([kevent(pipe.r, READ, ADD)], 0)
    out = {}

    def run():
        try:
            out["result"] = q.control(None, 1, 10)
        except OSError as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.2)
    assert t.is_alive()
    start = time.monotonic()
    q.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - start < 3
    assert out["error"].errno == errno.EBADF
    with pytest.raises(ValueError):
        q.control(None, 1, 0)


def test_timer_goes_through_the_daemon_until_deleted(lkq, pipe, monkeypatch):
    require_filter(lkq, TIMER)
    lkq.control([kevent(pipe.r, READ, ADD)], 0)
    os.write(pipe.w, b"x")
    lkq.control([kevent(7, TIMER, ADD, 0, 20)], 0)
    counter = _CountingSend(monkeypatch)
    seen = set()
    deadline = time.monotonic() + 5
    while TIMER not in seen and time.monotonic() < deadline:
        seen.update(e.filter for e in lkq.control(None, 4, 1))
    assert seen == {READ, TIMER}
    assert counter.calls > 0
    lkq.control([kevent(7, TIMER, DELETE)], 0)
    counter.calls = 0
    got = lkq.control(None, 4, 0)
    assert [e.filter for e in got] == [READ]
    assert counter.calls == 0


def test_blocking_wait_woken_by_another_thread(lkq, pipe):
    lkq.control([kevent(pipe.r, READ, ADD, 0, 0, 5)], 0)

    def writer():
        time.sleep(0.2)
        os.write(pipe.w, b"wake")

    t = threading.Thread(target=writer)
    start = time.monotonic()
    t.start()
    try:
        got = lkq.control(None, 1, None)
    finally:
        t.join()
    assert time.monotonic() - start >= 0.15
    assert _sorted(got) == [(pipe.r, READ, ADD, 0, 4, 5)]


def test_blocking_wait_times_out(lkq, pipe):
    lkq.control([kevent(pipe.r, READ, ADD)], 0)
    start = time.monotonic()
    assert lkq.control(None, 1, 0.2) == []
    assert time.monotonic() - start >= 0.19


def test_timer_added_by_another_thread_wakes_a_local_wait(lkq, pipe):
    require_filter(lkq, TIMER)
    lkq.control([kevent(pipe.r, READ, ADD)], 0)

    def adder():
        time.sleep(0.2)
        lkq.control([kevent(3, TIMER, ADD | kqueued.KQ_EV_ONESHOT, 0, 10)], 0)

    t = threading.Thread(target=adder)
    t.start()
    try:
        got = lkq.control(None, 1, 5)
    finally:
        t.join()
    assert [e.filter for e in got] == [TIMER]


def test_fd_closed_and_reused_gives_no_wrong_event(lkq):
    old = Pipe()
    keep = os.dup(old.r)  # the old read end lives on: its item too
    try:
        lkq.control([kevent(old.r, READ, ADD, 0, 0, 1)], 0)
        number = old.r
        os.close(old.r)
        new = Pipe()
        try:
            if new.r != number:
                os.dup2(new.r, number)
                os.close(new.r)
                new.r = number
            # The old pipe becomes readable: its item reports a descriptor
            # that now names another pipe, which has nothing to read.
            os.write(old.w, b"old")
            assert lkq.control(None, 4, 0) == []
            # That item cannot be removed any more: the ioctl path for good.
            assert not lkq._local.usable
            assert lkq.control(None, 4, 0.05) == []
            # The new pipe: added and reported as itself.
            lkq.control([kevent(new.r, READ, ADD, 0, 0, 2)], 0)
            os.write(new.w, b"newer")
            got = lkq.control(None, 4, 0)
            assert _sorted(got) == [(number, READ, ADD, 0, 5, 2)]
        finally:
            new.close()
    finally:
        os.close(keep)
        old.close()


def test_fd_closed_without_delete_and_reused(lkq):
    old = Pipe()
    lkq.control([kevent(old.r, READ, ADD, 0, 0, 1)], 0)
    number = old.r
    os.write(old.w, b"abc")
    old.close()
    new = Pipe()
    try:
        if new.r != number:
            os.dup2(new.r, number)
            os.close(new.r)
            new.r = number
        assert lkq.control(None, 4, 0) == []
        lkq.control([kevent(new.r, READ, ADD, 0, 0, 2)], 0)
        assert lkq.control(None, 4, 0) == []
        os.write(new.w, b"z")
        assert _sorted(lkq.control(None, 4, 0)) == [(number, READ, ADD, 0, 1, 2)]
        assert lkq._local.usable
    finally:
        new.close()


def test_fork_child_sharing_the_queue_gets_events(lkq, pipe):
    lkq.control([kevent(pipe.r, READ, ADD, 0, 0, 3)], 0)
    os.write(pipe.w, b"fork")
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            assert lkq._local is None or not lkq._local.usable
            got = lkq.control(None, 4, 2)
            os.write(report_w, struct.pack("=qQ", len(got),
                                           got[0].data if got else 0))
            code = 0
        finally:
            os._exit(code)
    os.close(report_w)
    data = os.read(report_r, 64)
    os.close(report_r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The child's knote namespace is its own: it sees the parent's knote
    # through the daemon (the parent's descriptor, the parent's data).
    assert struct.unpack("=qQ", data) == (1, 4)
    # The parent keeps its fast path.
    assert lkq._local.usable
    assert _sorted(lkq.control(None, 4, 0)) == [(pipe.r, READ, ADD, 0, 4, 3)]


def test_local_off_means_no_fast_path(daemon, monkeypatch):
    monkeypatch.setenv("KQUEUE_LOCAL", "0")
    with kqueued.kqueue() as q:
        assert q._local is None


def test_fromfd_has_no_fast_path(daemon):
    with kqueued.kqueue() as q:
        other = kqueued.kqueue.fromfd(os.dup(q.fileno()))
        try:
            assert other._local is None
        finally:
            other.close()


def test_rdwr_fifo_with_room_for_one_takes_turns(lkq):
    d = tempfile.mkdtemp()
    path = os.path.join(d, "fifo")
    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        lkq.control([kevent(fd, READ, ADD), kevent(fd, WRITE, ADD)], 0)
        os.write(fd, b"abc")
        seen = [lkq.control(None, 1, 0)[0].filter for _ in range(4)]
        assert sorted(seen) == [READ, READ, WRITE, WRITE]
    finally:
        os.close(fd)
        os.unlink(path)
        os.rmdir(d)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_random_changes_and_traffic_equal_the_daemons(pair, seed):
    """A random mix of changes (every flag the fast path must refuse or
    take), writes and reads on two pipes and an O_RDWR FIFO, applied to
    both kqueues; every answer, error and harvest must be equal."""
    import random
    rnd = random.Random(seed)
    fast, slow = pair
    pipes = [Pipe(), Pipe()]
    d = tempfile.mkdtemp()
    path = os.path.join(d, "fifo")
    os.mkfifo(path)
    fifo = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    for p in pipes:
        os.set_blocking(p.w, False)
        os.set_blocking(p.r, False)
    targets = [(p.r, READ) for p in pipes] + [(p.w, WRITE) for p in pipes] + [
        (fifo, READ), (fifo, WRITE), (pipes[0].r, WRITE), (pipes[0].w, READ)]
    flag_choices = [ADD, ADD, ADD | ENABLE, ADD | RECEIPT, ADD | CLEAR,
                    ADD | kqueued.KQ_EV_ONESHOT, ADD | DISABLE, DELETE,
                    DISABLE, ENABLE, ADD | kqueued.KQ_EV_DISPATCH]

    def both(changes, n):
        out = []
        for q in (fast, slow):
            try:
                out.append(("ok", _sorted(q.control(changes, n, 0))))
            except OSError as e:
                out.append(("error", e.errno))
        return out

    history = []
    try:
        for step in range(250):
            op = rnd.random()
            if op < 0.45:
                k = rnd.randint(1, 3)
                changes = []
                for _ in range(k):
                    ident, filt = rnd.choice(targets)
                    changes.append(kevent(ident, filt, rnd.choice(flag_choices),
                                          0, 0, rnd.randint(0, 3)))
                # Room for every event, or none: with less room than ready
                # events, each path may fairly pick different ones.
                n = rnd.choice([0, 64])
                history.append((step, changes, n))
                a, b = both(changes, n)
                assert a == b, (step, history, a, b)
            elif op < 0.65:
                fd = rnd.choice([pipes[0].w, pipes[1].w, fifo])
                try:
                    os.write(fd, b"x" * rnd.choice([1, 100, 5000, 70000]))
                except BlockingIOError:
                    pass
            elif op < 0.8:
                fd = rnd.choice([pipes[0].r, pipes[1].r, fifo])
                try:
                    os.read(fd, rnd.choice([1, 1000, 100000]))
                except BlockingIOError:
                    pass
            else:
                a, b = both(None, 64)
                history.append((step, "harvest", a))
                assert a == b, (step, history, a, b)
    finally:
        for p in pipes:
            p.close()
        os.close(fifo)
        os.unlink(path)
        os.rmdir(d)


def test_knote_added_while_another_thread_waits_locally(lkq, pipe):
    other = Pipe()
    try:
        lkq.control([kevent(pipe.r, READ, ADD)], 0)
        out = {}

        def waiter():
            out["got"] = lkq.control(None, 4, 5)

        t = threading.Thread(target=waiter)
        t.start()
        try:
            time.sleep(0.2)
            lkq.control([kevent(other.r, READ, ADD, 0, 0, 6)], 0)
            os.write(other.w, b"hey")
        finally:
            t.join(10)
        assert not t.is_alive()
        assert _sorted(out["got"]) == [(other.r, READ, ADD, 0, 3, 6)]
        assert lkq._local.usable
    finally:
        other.close()
