#!/usr/bin/env python3
"""Prints what kqueue.control() costs through the inline kevent ioctls and
through KQ_IOC_KEVENT (KQUEUE_INLINE=0), measured in one run against one
private daemon, the two modes alternating round by round.

    python3 client/python/tools/bench_control.py [--daemon PATH] [--pin CPU]
                                                 [--rounds N] [--seconds S]

--daemon: the kqueued binary (default bazel-bin/daemon/kqueued; build it
with -c opt for figures worth quoting). --pin: this process and the daemon
on one CPU. Figures are medians over the rounds; compare the two columns of
one run only (the machine's load moves both).
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))

import kqueued  # noqa: E402
from kqueued import _abi, kevent  # noqa: E402

READ = kqueued.KQ_FILTER_READ
ADD = kqueued.KQ_EV_ADD
DELETE = kqueued.KQ_EV_DELETE


def start_daemon(binary, cpu):
    directory = tempfile.mkdtemp(prefix="kqueued-pybench-", dir="/tmp")
    os.chmod(directory, 0o755)
    device = os.path.join(directory, "kqueue")
    proc = subprocess.Popen(
        [binary, "--device", device, "--transport", "fuse", "--foreground"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})
    os.environ[_abi.KQ_DEVICE_ENV] = device
    deadline = time.monotonic() + 10
    while True:
        try:
            kqueued.kqueue().close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("kqueued did not start")
            time.sleep(0.02)
    return proc, directory


def stop_daemon(proc, directory):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(directory, ignore_errors=True)


def make_kqueue(inline):
    # The switch is read when the kqueue is made.
    if inline:
        os.environ.pop("KQUEUE_INLINE", None)
    else:
        os.environ["KQUEUE_INLINE"] = "0"
    return kqueued.kqueue()


class Pipes(object):
    def __init__(self, n, ready):
        self.fds = [os.pipe() for _ in range(n)]
        if ready:
            for _, w in self.fds:
                os.write(w, b"x")

    def close(self):
        for r, w in self.fds:
            os.close(r)
            os.close(w)


def timed(fn, seconds):
    """Calls fn() for about `seconds`; the mean time per call in µs."""
    n = 0
    batch = 1
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        took = time.perf_counter() - start
        if took >= seconds:
            return took / n * 1e6
        batch = min(batch * 2, 1024)


def bench_empty(kq, seconds):
    return timed(lambda: kq.control(None, 0, 0), seconds)


def bench_harvest(kq, seconds, n):
    pipes = Pipes(n, ready=True)
    try:
        kq.control([kevent(r, READ, ADD) for r, _ in pipes.fds], 0)
        got = kq.control(None, n, 0)
        assert len(got) == n, (len(got), n)
        return timed(lambda: kq.control(None, n, 0), seconds)
    finally:
        kq.control([kevent(r, READ, DELETE) for r, _ in pipes.fds], 0)
        pipes.close()


def bench_add_delete(kq, seconds):
    pipes = Pipes(1, ready=False)
    r = pipes.fds[0][0]
    add = [kevent(r, READ, ADD)]
    delete = [kevent(r, READ, DELETE)]

    def pair():
        kq.control(add, 0)
        kq.control(delete, 0)
    try:
        return timed(pair, seconds)
    finally:
        pipes.close()


def bench_wakeup(inline, seconds):
    """Round trip between two threads, each parked in control() on its own
    kqueue until the other writes its pipe."""
    ka, kb = make_kqueue(inline), make_kqueue(inline)
    (ra, wa), (rb, wb) = os.pipe(), os.pipe()
    ka.control([kevent(ra, READ, ADD | kqueued.KQ_EV_CLEAR)], 0)
    kb.control([kevent(rb, READ, ADD | kqueued.KQ_EV_CLEAR)], 0)
    stop = []

    def partner():
        while True:
            kb.control(None, 1)
            os.read(rb, 1)
            if stop:
                return
            os.write(wa, b"x")

    t = threading.Thread(target=partner)
    t.start()

    def round_trip():
        os.write(wb, b"x")
        ka.control(None, 1)
        os.read(ra, 1)
    try:
        return timed(round_trip, seconds)
    finally:
        stop.append(1)
        os.write(wb, b"x")
        t.join()
        for fd in (ra, wa, rb, wb):
            os.close(fd)
        ka.close()
        kb.close()


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(_HERE)))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--daemon",
                   default=os.path.join(root, "bazel-bin", "daemon", "kqueued"))
    p.add_argument("--pin", type=int, default=None, metavar="CPU")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.3,
                   help="per figure, mode and round")
    args = p.parse_args()
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    proc, directory = start_daemon(args.daemon, args.pin)
    try:
        with make_kqueue(True) as kq:
            abi = kqueued.daemon_version(kq)[0]
        if abi < 3:
            print("note: the daemon speaks ABI %d: both columns are "
                  "KQ_IOC_KEVENT" % abi)
        figures = [
            ("empty call (no changes, no room)", "µs",
             lambda kq, s: bench_empty(kq, s)),
            ("harvest 1 ready pipe, zero timeout", "µs",
             lambda kq, s: bench_harvest(kq, s, 1)),
            ("harvest 64 ready pipes (capacity 64)", "µs",
             lambda kq, s: bench_harvest(kq, s, 64)),
            ("harvest 400 ready pipes (capacity 408)", "µs",
             lambda kq, s: bench_harvest(kq, s, 400)),
            ("EV_ADD + EV_DELETE of a pipe (two calls)", "µs",
             lambda kq, s: bench_add_delete(kq, s)),
            ("wake-up round trip, two threads", "µs", None),
        ]
        results = {name: {True: [], False: []} for name, _, _ in figures}
        for _ in range(args.rounds):
            for inline in (True, False):
                for name, _, fn in figures:
                    if fn is None:
                        v = bench_wakeup(inline, args.seconds)
                    else:
                        with make_kqueue(inline) as kq:
                            v = fn(kq, args.seconds)
                    results[name][inline].append(v)
        print("daemon %s (ABI %d), pinned: %s, %d rounds, load %s"
              % (args.daemon, abi, "CPU %d" % args.pin
                 if args.pin is not None else "no", args.rounds,
                 " ".join("%.2f" % x for x in os.getloadavg())))
        print("%-42s %10s %10s %8s" % ("figure (median)", "inline",
                                       "pointer", "ratio"))
        for name, unit, _ in figures:
            a = statistics.median(results[name][True])
            b = statistics.median(results[name][False])
            print("%-42s %8.1f%-2s %8.1f%-2s %7.2fx"
                  % (name, a, unit, b, unit, b / a))
    finally:
        stop_daemon(proc, directory)


if __name__ == "__main__":
    main()
