#!/usr/bin/env python3
"""Prints what a zero-timeout kqueue.control(None, 1, 0) harvesting one ready
pipe costs in the Python module with the fast path (ABI 4 local collection),
with KQUEUE_LOCAL=0 (every call through the daemon), and what
select.epoll.poll(0) costs for the same pipe, in one run against one private
daemon, alternating round by round; "its syscalls" is what the fast path's
own system calls cost from Python (epoll.poll, fstat, FIONREAD), the floor
under it.

    python3 bench/python_local_bench.py [--daemon PATH] [--pin CPU]
                                        [--rounds N] [--seconds S]

--daemon: the kqueued binary (default bazel-bin/daemon/kqueued; build it
with -c opt for figures worth quoting). --pin: this process and the daemon
on one CPU. Figures are medians over the rounds, in µs per call; compare
the columns of one run only.
"""

import argparse
import os
import select
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path.insert(0, os.path.join(_ROOT, "client", "python"))

sys.path.insert(0, os.path.join(_ROOT, "client", "python", "tools"))

import kqueued  # noqa: E402
from kqueued import _abi, kevent  # noqa: E402
from bench_control import start_daemon, stop_daemon, timed  # noqa: E402


def make_kqueue(local):
    # The switch is read when the kqueue is made.
    if local:
        os.environ.pop("KQUEUE_LOCAL", None)
    else:
        os.environ["KQUEUE_LOCAL"] = "0"
    return kqueued.kqueue()


def bench_kqueue(kq, r, seconds):
    kq.control([kevent(r, kqueued.KQ_FILTER_READ, kqueued.KQ_EV_ADD)], 0)
    try:
        got = kq.control(None, 1, 0)
        assert len(got) == 1 and got[0].data == 1, got
        return timed(lambda: kq.control(None, 1, 0), seconds)
    finally:
        kq.control([kevent(r, kqueued.KQ_FILTER_READ, kqueued.KQ_EV_DELETE)],
                   0)


def bench_epoll(r, seconds):
    ep = select.epoll()
    try:
        ep.register(r, select.EPOLLIN)
        assert len(ep.poll(0, 1)) == 1
        return timed(lambda: ep.poll(0, 1), seconds)
    finally:
        ep.close()


def bench_syscalls(r, seconds):
    """The fast path's own system calls for this harvest, from Python:
    epoll.poll, fstat (the identity check) and FIONREAD (the data)."""
    import fcntl
    import termios
    ep = select.epoll()
    zero = bytes(4)
    try:
        ep.register(r, select.EPOLLIN)

        def one():
            ep.poll(0, 2)
            os.fstat(r)
            fcntl.ioctl(r, termios.FIONREAD, zero)
        return timed(one, seconds)
    finally:
        ep.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--daemon",
                   default=os.path.join(_ROOT, "bazel-bin", "daemon", "kqueued"))
    p.add_argument("--pin", type=int, default=None, metavar="CPU")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.3,
                   help="per column and round")
    args = p.parse_args()
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    proc, directory = start_daemon(args.daemon, args.pin)
    r, w = os.pipe()
    os.write(w, b"x")
    try:
        fast = make_kqueue(True)
        slow = make_kqueue(False)
        abi = kqueued.daemon_version(fast)[0]
        if fast._local is None:
            print("note: no fast path (the daemon speaks ABI %d): the first "
                  "column is the ioctl path too" % abi)
        columns = {"fast path": [], "KQUEUE_LOCAL=0": [], "epoll.poll(0)": [],
                   "its syscalls": []}
        for _ in range(args.rounds):
            columns["fast path"].append(bench_kqueue(fast, r, args.seconds))
            columns["KQUEUE_LOCAL=0"].append(bench_kqueue(slow, r, args.seconds))
            columns["epoll.poll(0)"].append(bench_epoll(r, args.seconds))
            columns["its syscalls"].append(bench_syscalls(r, args.seconds))
        fast.close()
        slow.close()
    finally:
        os.close(r)
        os.close(w)
        stop_daemon(proc, directory)
    epoll = statistics.median(columns["epoll.poll(0)"])
    print("zero-timeout control(None, 1, 0), 1 ready pipe (%s; median of %d)"
          % ("pinned to CPU %d" % args.pin if args.pin is not None
             else "unpinned", args.rounds))
    for name, values in columns.items():
        m = statistics.median(values)
        print("  %-16s %8.2f µs  %6.1f× epoll" % (name, m, m / epoll))


if __name__ == "__main__":
    main()
