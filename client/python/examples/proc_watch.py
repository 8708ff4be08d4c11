#!/usr/bin/env python3
"""Follow a process with EVFILT_PROC (NOTE_EXIT, NOTE_FORK, NOTE_EXEC), the BSD way.

    proc_watch.py PID                 watch a running process until it exits
    proc_watch.py -- COMMAND [ARG]... start COMMAND and watch it from its exec

Prints one line per event: "PID: fork", "PID: exec", "PID: exit status N"
(or "killed by signal N"). --timeout SECONDS gives up after that long without
an event. Written against BSD's select.kqueue; on Linux the kqueued module
stands in for it.
"""

import argparse
import os
import sys

try:  # BSD, macOS: the kernel's kqueue
    from select import (kqueue, kevent, KQ_FILTER_PROC, KQ_EV_ADD, KQ_EV_EOF,
                        KQ_NOTE_EXIT, KQ_NOTE_FORK, KQ_NOTE_EXEC)
except ImportError:  # Linux: kqueued serves kqueue as a device
    from kqueued import (kqueue, kevent, KQ_FILTER_PROC, KQ_EV_ADD, KQ_EV_EOF,
                         KQ_NOTE_EXIT, KQ_NOTE_FORK, KQ_NOTE_EXEC)


def start_stopped(command):
    """Fork a child that waits for a go-ahead before exec'ing `command`, so
    the watch is in place before the exec happens."""
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_w)
            if os.read(go_r, 1) == b"x":  # the parent's watch is in place
                os.execvp(command[0], command)
        except BaseException as e:
            sys.stderr.write("exec %s: %s\n" % (command[0], e))
        finally:
            os._exit(127)
    os.close(go_r)
    return pid, go_w


def describe_exit(status):
    if os.WIFEXITED(status):
        return "exit status %d" % os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit (status 0x%x)" % status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("target", nargs="+",
                        help="a PID, or -- followed by a command to run")
    args = parser.parse_args(argv)

    child, go = None, None
    if len(args.target) == 1 and args.target[0].isdigit():
        pid = int(args.target[0])
    else:
        child, go = start_stopped(args.target)
        pid = child

    kq = None
    try:
        kq = kqueue()
        kq.control([kevent(pid, KQ_FILTER_PROC, KQ_EV_ADD,
                           KQ_NOTE_EXIT | KQ_NOTE_FORK | KQ_NOTE_EXEC)], 0, 0)
        print("watching %d" % pid, flush=True)
        if go is not None:
            os.write(go, b"x")
            os.close(go)
            go = None
        while True:
            events = kq.control(None, 8, args.timeout)
            if not events:
                print("timeout", flush=True)
                return 1
            for ev in events:
                if ev.fflags & KQ_NOTE_FORK:
                    print("%d: fork" % ev.ident, flush=True)
                if ev.fflags & KQ_NOTE_EXEC:
                    print("%d: exec" % ev.ident, flush=True)
                if ev.fflags & KQ_NOTE_EXIT or ev.flags & KQ_EV_EOF:
                    # data is the wait(2)-style status (NetBSD, kqueued).
                    print("%d: %s" % (ev.ident, describe_exit(ev.data)), flush=True)
                    if ev.ident == pid:
                        return 0
    finally:
        if kq is not None:
            kq.close()
        if go is not None:
            os.close(go)  # never started: the child exits without exec'ing
        if child is not None:
            os.waitpid(child, 0)


if __name__ == "__main__":
    sys.exit(main())
