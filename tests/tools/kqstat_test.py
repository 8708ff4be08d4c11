"""kqstat and the KQ_IOC_STAT control ioctl, against a private daemon.

A client of uid 65534 holds two kqueues (READ + TIMER with an event pending;
USER with a kevent call parked on it); root holds one with three USER knotes.
Root's kqstat sees both processes with the right counts; uid 65534 sees only
its own; uid 65533 sees neither; -p filters by process.
"""

import ctypes
import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import kqdaemon  # noqa: E402

KQ_IOC_STAT = 0xC0206B42
NOBODY = 65534
OTHER = 65533

CHILD = r"""
import os, sys, threading, time
import kqueued as select
a = select.kqueue()
r, w = os.pipe()
a.control([select.kevent(r, select.KQ_FILTER_READ, select.KQ_EV_ADD),
           select.kevent(7, select.KQ_FILTER_TIMER, select.KQ_EV_ADD, 0, 3600000)], 0)
os.write(w, b"x")
b = select.kqueue()
b.control([select.kevent(1, select.KQ_FILTER_USER, select.KQ_EV_ADD | select.KQ_EV_CLEAR)], 0)
t = threading.Thread(target=lambda: b.control(None, 1, None), daemon=True)
t.start()
print("ready", flush=True)
sys.stdin.read()
"""


def as_user(uid):
    def switch():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    return switch


class KqstatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = kqdaemon.Daemon()
        try:
            cls.start_clients()
        except BaseException:
            # tearDownClass does not run when this fails: stop the daemon
            # here, or its mount would outlive the test.
            if getattr(cls, "child", None):
                cls.child.kill()
                cls.child.wait()
            cls.daemon.stop()
            raise

    @classmethod
    def start_clients(cls):
        # Other users cannot read root's runfiles: copy kqstat and the module
        # into the daemon's world-readable directory.
        cls.kqstat = os.path.join(cls.daemon.directory, "kqstat")
        shutil.copy(kqdaemon.runfile("tools/kqstat/kqstat"), cls.kqstat)
        module_dir = os.path.join(cls.daemon.directory, "python")
        shutil.copytree(os.path.dirname(kqdaemon.runfile("client/python/kqueued/__init__.py")),
                        os.path.join(module_dir, "kqueued"))
        cls.env = dict(os.environ, KQUEUE_DEVICE=cls.daemon.device, PYTHONPATH=module_dir,
                       PYTHONDONTWRITEBYTECODE="1")
        cls.child = subprocess.Popen([sys.executable, "-c", CHILD], env=cls.env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     preexec_fn=as_user(NOBODY))
        line = cls.child.stdout.readline()
        assert line == b"ready\n", (line, cls.daemon.log())
        # Root's own kqueue, through the module too.
        sys.path.insert(0, module_dir)
        os.environ["KQUEUE_DEVICE"] = cls.daemon.device
        import kqueued
        cls.kqueued = kqueued
        cls.root_kq = kqueued.kqueue()
        cls.root_kq.control([kqueued.kevent(i, kqueued.KQ_FILTER_USER, kqueued.KQ_EV_ADD)
                             for i in (1, 2, 3)], 0)

    @classmethod
    def tearDownClass(cls):
        cls.root_kq.close()
        cls.child.stdin.close()
        cls.child.wait(10)
        cls.daemon.stop()

    def run_kqstat(self, *args, uid=None):
        out = subprocess.run([self.kqstat] + list(args), env=self.env, check=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=as_user(uid) if uid is not None else None, timeout=20)
        return out.stdout.decode()

    def stat_json(self, *args, uid=None, wait=True):
        # The parked call is parked a moment after the child says "ready".
        deadline = time.monotonic() + 10
        while True:
            doc = json.loads(self.run_kqstat("--json", *args, uid=uid))
            waiting = sum(q["waiters"] for p in doc["processes"] for q in p["kqueues"]
                          if p["pid"] == self.child.pid)
            if not wait or waiting == 1 or time.monotonic() > deadline:
                return doc
            time.sleep(0.05)

    def process(self, doc, pid):
        found = [p for p in doc["processes"] if p["pid"] == pid]
        return found[0] if found else None

    def check_child(self, p):
        self.assertIsNotNone(p)
        self.assertEqual(p["uid"], NOBODY)
        self.assertEqual(p["command"], "python3")
        kqs = sorted(p["kqueues"], key=lambda q: q["id"])
        self.assertEqual(len(kqs), 2)
        a, b = kqs
        self.assertEqual(a["knotes"], 2)
        self.assertEqual(a["knotes_by_filter"], {"READ": 1, "TIMER": 1})
        self.assertEqual(a["pending"], 1)
        self.assertEqual(a["waiters"], 0)
        self.assertEqual(b["knotes_by_filter"], {"USER": 1})
        self.assertEqual(b["pending"], 0)
        self.assertEqual(b["waiters"], 1)

    def test_root_sees_every_process(self):
        doc = self.stat_json()
        self.check_child(self.process(doc, self.child.pid))
        mine = self.process(doc, os.getpid())
        self.assertIsNotNone(mine)
        self.assertEqual([q["knotes_by_filter"] for q in mine["kqueues"]], [{"USER": 3}])
        users = {u["uid"]: u for u in doc["users"]}
        self.assertEqual(users[NOBODY]["kqueues"]["used"], 2)
        self.assertEqual(users[NOBODY]["knotes"]["used"], 3)
        self.assertEqual(users[NOBODY]["timers"]["used"], 1)
        self.assertGreater(users[NOBODY]["knotes"]["limit"], 0)
        # Every resource the daemon charges has a name (stat_version 2): the
        # child's process and thread pidfds, its named kqueue descriptors.
        self.assertEqual(users[NOBODY]["fast_timers"]["used"], 0)
        self.assertGreaterEqual(users[NOBODY]["daemon_fds"]["used"], 2)
        self.assertGreater(users[NOBODY]["daemon_fds"]["limit"], 0)
        self.assertGreaterEqual(users[NOBODY]["kqueue_names"]["used"], 1)
        self.assertEqual(users[NOBODY]["kqueue_names"]["limit"], 4096)
        self.assertFalse([k for k in users[NOBODY] if k.startswith("resource")], users[NOBODY])
        # kqstat's own kqueue is left out of the processes but charged to root.
        self.assertIn(0, users)
        self.assertGreaterEqual(doc["totals"]["kqueues"], 4)
        self.assertGreaterEqual(doc["totals"]["knotes"], 6)
        self.assertGreaterEqual(doc["totals"]["waiters"], 1)
        self.assertEqual(doc["daemon"]["pid"], self.daemon.proc.pid)
        self.assertGreater(doc["daemon"]["fds"], 3)
        self.assertGreater(doc["daemon"]["rss_bytes"], 0)

    def test_a_user_sees_only_their_own(self):
        doc = self.stat_json(uid=NOBODY)
        self.check_child(self.process(doc, self.child.pid))
        self.assertEqual([p["pid"] for p in doc["processes"]], [self.child.pid])
        self.assertEqual([u["uid"] for u in doc["users"]], [NOBODY])
        other = self.stat_json(uid=OTHER, wait=False)
        self.assertEqual(other["processes"], [])
        self.assertEqual([u["uid"] for u in other["users"]], [OTHER])
        # The daemon-wide totals are the same for everyone.
        self.assertGreaterEqual(other["totals"]["knotes"], 6)
        # The text table follows the same rule.
        text = self.run_kqstat(uid=OTHER)
        self.assertNotIn(str(self.child.pid), text.split())
        self.assertNotIn("USER:3", text)

    def test_pid_filter(self):
        doc = self.stat_json("-p", str(self.child.pid))
        self.assertEqual([p["pid"] for p in doc["processes"]], [self.child.pid])
        doc = self.stat_json("-p", str(os.getpid()), wait=False)
        self.assertEqual([p["pid"] for p in doc["processes"]], [os.getpid()])

    def test_text_table(self):
        self.stat_json()  # the waiter is parked
        text = self.run_kqstat()
        self.assertIn("KNOTES BY FILTER", text)
        rows = [line.split() for line in text.splitlines()]
        child_rows = [r for r in rows if r and r[0] == str(self.child.pid)]
        self.assertEqual(len(child_rows), 2, text)
        self.assertIn(["READ:1", "TIMER:1"], [r[7:] for r in child_rows])
        self.assertIn("USER:3", text)
        uid_rows = [r for r in rows if r and r[0] == str(NOBODY)]
        # kqueues, knotes, timers (the resources after them: fast timers and
        # daemon descriptors, whose limit follows the daemon's fd budget)
        self.assertIn(["2/1024", "3/65536", "1/4096"], [r[1:4] for r in uid_rows])

    def test_ioctl_contract(self):
        fd = os.open(self.daemon.device, os.O_RDWR | os.O_CLOEXEC)
        try:
            # Too small a buffer: nothing written, returns 0, `needed` says how much.
            buf = ctypes.create_string_buffer(16)
            args = bytearray(struct.pack("<QQQiI", ctypes.addressof(buf), 16, 0, 0, 0))
            self.assertEqual(fcntl.ioctl(fd, KQ_IOC_STAT, args, True), 0)
            needed = struct.unpack_from("<Q", args, 16)[0]
            self.assertGreaterEqual(needed, 96 + 2 * 96)
            self.assertEqual(buf.raw, b"\0" * 16)
            # Large enough: the header, then records of the stated sizes.
            buf = ctypes.create_string_buffer(needed + 4096)
            args = bytearray(struct.pack("<QQQiI", ctypes.addressof(buf), needed + 4096, 0, 0, 0))
            n = fcntl.ioctl(fd, KQ_IOC_STAT, args, True)
            version, hsize, qsize, usize, nq, nu = struct.unpack_from("<6I", buf.raw, 0)
            self.assertEqual((version, hsize, qsize, usize), (2, 96, 96, 136))
            self.assertEqual(n, hsize + nq * qsize + nu * usize)
            # Flags must be zero; a pid must not be negative.
            for bad in (struct.pack("<QQQiI", 0, 0, 0, 0, 1), struct.pack("<QQQiI", 0, 0, 0, -1, 0)):
                with self.assertRaises(OSError) as e:
                    fcntl.ioctl(fd, KQ_IOC_STAT, bytearray(bad), True)
                self.assertEqual(e.exception.errno, 22)
            # An unwritable buffer.
            with self.assertRaises(OSError) as e:
                fcntl.ioctl(fd, KQ_IOC_STAT, bytearray(struct.pack("<QQQiI", 8, 1 << 20, 0, 0, 0)), True)
            self.assertEqual(e.exception.errno, 14)
        finally:
            os.close(fd)
        # The daemon carries on.
        self.assertGreaterEqual(kqdaemon.abi_version(self.daemon.device) or 0, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
