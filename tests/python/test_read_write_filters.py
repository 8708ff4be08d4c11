"""EVFILT_READ / EVFILT_WRITE on pipes, and the flag rules seen through them:
EV_ONESHOT, EV_CLEAR, EV_DISABLE/EV_ENABLE, EV_DELETE, EV_EOF, EBADF.

Skipped as a whole while the daemon does not implement EVFILT_READ.
"""

import errno
import os
import threading
import time

import pytest

import kqueued
from kqueued import kevent

from kq_helpers import Pipe, require_filter

READ = kqueued.KQ_FILTER_READ
WRITE = kqueued.KQ_FILTER_WRITE
ADD = kqueued.KQ_EV_ADD


@pytest.fixture
def rkq(kq):
    require_filter(kq, READ)
    return kq


@pytest.fixture
def pipe():
    p = Pipe()
    yield p
    p.close()


def test_pipe_data_is_bytes_buffered(rkq, pipe):
    rkq.control([kevent(pipe.r, READ, ADD, 0, 0, 42)], 0)
    assert rkq.control(None, 1, 0) == []
    os.write(pipe.w, b"hello")
    got = rkq.control(None, 1, 2)
    assert len(got) == 1
    e = got[0]
    assert (e.ident, e.filter, e.data, e.udata) == (pipe.r, READ, 5, 42)
    assert not e.flags & kqueued.KQ_EV_EOF
    # Level-triggered: still readable, so reported again, with the new count.
    os.write(pipe.w, b"!!")
    assert [e.data for e in rkq.control(None, 1, 0)] == [7]
    os.read(pipe.r, 7)
    assert rkq.control(None, 1, 0) == []


def test_ident_may_be_a_file_object(rkq, pipe):
    with os.fdopen(os.dup(pipe.r), "rb", buffering=0) as f:
        rkq.control([kevent(f, READ, ADD)], 0)
        os.write(pipe.w, b"x")
        got = rkq.control(None, 2, 2)
        assert [e.ident for e in got] == [f.fileno()]
        rkq.control([kevent(f, READ, kqueued.KQ_EV_DELETE)], 0)


def test_eof_when_the_writer_closes(rkq, pipe):
    rkq.control([kevent(pipe.r, READ, ADD)], 0)
    os.write(pipe.w, b"abc")
    pipe.close_writer()
    got = rkq.control(None, 1, 2)
    assert len(got) == 1
    assert got[0].flags & kqueued.KQ_EV_EOF
    assert got[0].data == 3


def test_oneshot_is_reported_once_then_gone(rkq, pipe):
    rkq.control([kevent(pipe.r, READ, ADD | kqueued.KQ_EV_ONESHOT)], 0)
    os.write(pipe.w, b"abc")
    assert len(rkq.control(None, 4, 1)) == 1
    assert rkq.control(None, 4, 0) == []  # still readable, but deleted
    with pytest.raises(FileNotFoundError):
        rkq.control([kevent(pipe.r, READ, kqueued.KQ_EV_DELETE)], 0)


def test_clear_reports_changes_only(rkq, pipe):
    rkq.control([kevent(pipe.r, READ, ADD | kqueued.KQ_EV_CLEAR)], 0)
    os.write(pipe.w, b"abc")
    got = rkq.control(None, 4, 1)
    assert [e.data for e in got] == [3]
    assert rkq.control(None, 4, 0) == []  # nothing new
    os.write(pipe.w, b"de")
    got = rkq.control(None, 4, 1)
    assert [e.data for e in got] == [5]  # the filter sees the whole buffer


def test_delete_then_enoent(rkq, pipe):
    rkq.control([kevent(pipe.r, READ, ADD)], 0)
    os.write(pipe.w, b"x")
    rkq.control([kevent(pipe.r, READ, kqueued.KQ_EV_DELETE)], 0)
    assert rkq.control(None, 1, 0) == []
    with pytest.raises(OSError) as info:
        rkq.control([kevent(pipe.r, READ, kqueued.KQ_EV_DELETE)], 0)
    assert info.value.errno == errno.ENOENT
    # With room in the eventlist the failure is an EV_ERROR entry instead.
    got = rkq.control([kevent(pipe.r, READ, kqueued.KQ_EV_DELETE, 0, 0, 5)], 1, 0)
    assert len(got) == 1
    assert got[0].flags & kqueued.KQ_EV_ERROR
    assert (got[0].ident, got[0].data, got[0].udata) == (pipe.r, errno.ENOENT, 5)


def test_disable_and_enable(rkq, pipe):
    rkq.control([kevent(pipe.r, READ, ADD)], 0)
    os.write(pipe.w, b"x")
    rkq.control([kevent(pipe.r, READ, kqueued.KQ_EV_DISABLE)], 0)
    assert rkq.control(None, 1, 0) == []
    rkq.control([kevent(pipe.r, READ, kqueued.KQ_EV_ENABLE)], 0)
    assert len(rkq.control(None, 1, 0)) == 1


def test_re_add_updates_udata(rkq, pipe):
    rkq.control([kevent(pipe.r, READ, ADD, 0, 0, 1)], 0)
    rkq.control([kevent(pipe.r, READ, ADD, 0, 0, 2**64 - 1)], 0)
    os.write(pipe.w, b"x")
    assert [e.udata for e in rkq.control(None, 2, 1)] == [2**64 - 1]


def test_bad_descriptor_is_ebadf(rkq, pipe):
    r = os.dup(pipe.r)
    os.close(r)
    with pytest.raises(OSError) as info:
        rkq.control([kevent(r, READ, ADD)], 0)
    assert info.value.errno == errno.EBADF


def test_none_timeout_blocks_until_a_thread_writes(rkq, pipe):
    rkq.control([kevent(pipe.r, READ, ADD)], 0)

    def writer():
        time.sleep(0.3)
        os.write(pipe.w, b"late")

    t = threading.Thread(target=writer)
    start = time.monotonic()
    t.start()
    got = rkq.control(None, 1)
    took = time.monotonic() - start
    t.join()
    assert [e.data for e in got] == [4]
    assert took >= 0.25, took


def test_two_threads_never_miss_a_level_triggered_event(rkq, pipe):
    # NetBSD PR kern/50094: concurrent collectors of one readable pipe must
    # each see it on every zero-timeout call.
    rkq.control([kevent(pipe.r, READ, ADD)], 0)
    os.write(pipe.w, b"x")
    misses = []
    rounds = 1000

    def collect():
        n = 0
        for _ in range(rounds):
            if len(rkq.control(None, 1, 0)) != 1:
                n += 1
        misses.append(n)

    threads = [threading.Thread(target=collect) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert misses == [0, 0]


def test_write_filter_on_a_pipe(kq, pipe):
    require_filter(kq, WRITE)
    kq.control([kevent(pipe.w, WRITE, ADD)], 0)
    got = kq.control(None, 1, 1)
    assert len(got) == 1 and got[0].filter == WRITE
    assert got[0].data >= 512  # at least PIPE_BUF free
    os.close(pipe.r)
    pipe.r = -1
    got = kq.control(None, 1, 1)
    assert len(got) == 1 and got[0].flags & kqueued.KQ_EV_EOF
