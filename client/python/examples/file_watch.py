#!/usr/bin/env python3
"""Watch files for changes with EVFILT_VNODE, the BSD way.

    file_watch.py [--count N] [--timeout SECONDS] PATH...

Prints one line per event ("PATH: WRITE|EXTEND"). Stops after N events
(default: never), or after SECONDS without any (default: wait forever), or
when every watched file was deleted or renamed away. Written against BSD's
select.kqueue; on Linux the kqueued module stands in for it.
"""

import argparse
import os
import sys

try:  # BSD, macOS: the kernel's kqueue
    from select import (kqueue, kevent, KQ_FILTER_VNODE, KQ_EV_ADD, KQ_EV_CLEAR,
                        KQ_NOTE_DELETE, KQ_NOTE_WRITE, KQ_NOTE_EXTEND, KQ_NOTE_ATTRIB,
                        KQ_NOTE_LINK, KQ_NOTE_RENAME, KQ_NOTE_REVOKE)
except ImportError:  # Linux: kqueued serves kqueue as a device
    from kqueued import (kqueue, kevent, KQ_FILTER_VNODE, KQ_EV_ADD, KQ_EV_CLEAR,
                         KQ_NOTE_DELETE, KQ_NOTE_WRITE, KQ_NOTE_EXTEND, KQ_NOTE_ATTRIB,
                         KQ_NOTE_LINK, KQ_NOTE_RENAME, KQ_NOTE_REVOKE)

NOTES = [
    (KQ_NOTE_DELETE, "DELETE"),
    (KQ_NOTE_WRITE, "WRITE"),
    (KQ_NOTE_EXTEND, "EXTEND"),
    (KQ_NOTE_ATTRIB, "ATTRIB"),
    (KQ_NOTE_LINK, "LINK"),
    (KQ_NOTE_RENAME, "RENAME"),
    (KQ_NOTE_REVOKE, "REVOKE"),
]
ALL_NOTES = 0
for _bit, _ in NOTES:
    ALL_NOTES |= _bit


def describe(fflags):
    names = [name for bit, name in NOTES if fflags & bit]
    return "|".join(names) if names else "0x%x" % fflags


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--count", type=int, default=0,
                        help="stop after this many events (0: never)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop after this many seconds without an event")
    args = parser.parse_args(argv)

    kq = kqueue()
    fds = {}
    try:
        changes = []
        for path in args.paths:
            # O_RDONLY is enough to watch; BSD's O_EVTONLY does not exist here.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            fds[fd] = path
            changes.append(kevent(fd, KQ_FILTER_VNODE, KQ_EV_ADD | KQ_EV_CLEAR,
                                  ALL_NOTES))
        kq.control(changes, 0, 0)
        print("watching %s" % " ".join(args.paths), flush=True)

        seen = 0
        alive = set(fds)
        while alive:
            events = kq.control(None, 16, args.timeout)
            if not events:
                print("timeout", flush=True)
                return 1 if args.count else 0
            for ev in events:
                path = fds.get(ev.ident, "fd %d" % ev.ident)
                print("%s: %s" % (path, describe(ev.fflags)), flush=True)
                if ev.fflags & (KQ_NOTE_DELETE | KQ_NOTE_RENAME | KQ_NOTE_REVOKE):
                    alive.discard(ev.ident)
                seen += 1
                if args.count and seen >= args.count:
                    return 0
        return 0
    finally:
        kq.close()
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
