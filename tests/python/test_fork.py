"""A kqueue shared across os.fork(): unlike BSD, this project shares the queue
with the child on purpose; every event is collected exactly once."""

import os
import struct
import time

import pytest

import kqueued
from kqueued import kevent

from kq_helpers import Pipe, require_filter

USER = kqueued.KQ_FILTER_USER
READ = kqueued.KQ_FILTER_READ


def _run_workers(kq, nworkers, report_w):
    pids = []
    for _ in range(nworkers):
        pid = os.fork()
        if pid == 0:  # child: collect until the queue stays empty for 1 s
            code = 0
            try:
                while True:
                    got = kq.control(None, 1, 1.0)
                    if not got:
                        break
                    os.write(report_w, struct.pack("=Q", got[0].ident))
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    return pids


def _collect_reports(report_r):
    ids = []
    buf = b""
    while True:
        chunk = os.read(report_r, 4096)
        if not chunk:
            break
        buf += chunk
    for i in range(0, len(buf) - len(buf) % 8, 8):
        ids.append(struct.unpack_from("=Q", buf, i)[0])
    return ids


def _reap(pids):
    codes = []
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        codes.append(os.waitstatus_to_exitcode(status))
    return codes


def test_each_event_is_collected_once_by_one_of_the_processes(kq):
    require_filter(kq, USER)
    n_events, n_workers = 200, 3
    report_r, report_w = os.pipe()
    try:
        pids = _run_workers(kq, n_workers, report_w)
    finally:
        os.close(report_w)
    try:
        kq.control([kevent(i, USER, kqueued.KQ_EV_ADD | kqueued.KQ_EV_ONESHOT,
                           kqueued.KQ_NOTE_TRIGGER) for i in range(n_events)], 0)
        ids = _collect_reports(report_r)
    finally:
        os.close(report_r)
        codes = _reap(pids)
    assert codes == [0] * n_workers
    assert sorted(ids) == list(range(n_events))


def test_pipe_event_collected_once_across_fork(kq):
    require_filter(kq, READ)
    p = Pipe()
    try:
        kq.control([kevent(p.r, READ, kqueued.KQ_EV_ADD | kqueued.KQ_EV_ONESHOT)], 0)
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                got = kq.control(None, 1, 1.5)
                os.write(result_w, bytes([len(got)]))
            finally:
                os._exit(0)
        os.close(result_w)
        time.sleep(0.1)
        os.write(p.w, b"x")
        mine = len(kq.control(None, 1, 1.5))
        theirs = os.read(result_r, 1)
        os.close(result_r)
        os.waitpid(pid, 0)
        assert theirs != b"", "the child did not report"
        assert mine + theirs[0] == 1
    finally:
        p.close()


def test_child_can_wake_the_parent(kq):
    require_filter(kq, USER)
    kq.control([kevent(5, USER, kqueued.KQ_EV_ADD | kqueued.KQ_EV_CLEAR)], 0)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            time.sleep(0.1)
            kq.control([kevent(5, USER, 0, kqueued.KQ_NOTE_TRIGGER)], 0)
            code = 0
        finally:
            os._exit(code)
    got = kq.control(None, 1, 5)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [e.ident for e in got] == [5]
