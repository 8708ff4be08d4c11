"""The daemon as a service: systemd's readiness protocol and the log.

No systemd runs here, so a test plays its part: a datagram socket named by
$NOTIFY_SOCKET must receive READY=1 once the device is served (not
before: the device answers at that moment) and STOPPING=1 on SIGTERM, after
which the daemon exits 0. The log: levels, the journald "<N>" prefix under
$JOURNAL_STREAM, --log-level, and the per-client rate limit.
"""

import atexit
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import kqdaemon  # noqa: E402


def notify_socket(abstract):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = "kqueued-test-%d-%d" % (os.getpid(), time.monotonic_ns())
        s.bind("\0" + name)
        address = "@" + name
    else:
        directory = tempfile.mkdtemp(prefix="kqueued-notify-")
        address = os.path.join(directory, "notify")
        s.bind(address)
        # Unbound with the socket's last close; the directory goes at exit.
        atexit.register(shutil.rmtree, directory, True)
    s.settimeout(10)
    return s, address


class NotifyTest(unittest.TestCase):
    def run_daemon(self, abstract):
        sock, address = notify_socket(abstract)
        env = dict(os.environ, NOTIFY_SOCKET=address)
        d = kqdaemon.Daemon(env=env, wait_ready=False)
        try:
            message = sock.recv(4096).decode()
            fields = message.split("\n")
            self.assertIn("READY=1", fields)
            self.assertIn("STATUS=serving %s (fuse)" % d.device, fields)
            # Ready means served: the device answers right away.
            self.assertGreaterEqual(kqdaemon.abi_version(d.device) or 0, 2)
            d.proc.send_signal(signal.SIGTERM)
            self.assertIn("STOPPING=1", sock.recv(4096).decode().split("\n"))
            self.assertEqual(d.proc.wait(10), 0)
            self.assertFalse(os.path.ismount(d.device))
        finally:
            d.stop()
            sock.close()

    def test_path_socket(self):
        self.run_daemon(abstract=False)

    def test_abstract_socket(self):
        self.run_daemon(abstract=True)

    def test_restart_after_a_crash(self):
        # What Restart=on-failure does after SIGKILL: start again on the same
        # path, over the dead mount the crash left; READY=1 again.
        first = kqdaemon.Daemon()
        try:
            first.proc.kill()
            first.proc.wait(10)
            sock, address = notify_socket(False)
            env = dict(os.environ, NOTIFY_SOCKET=address)
            second = kqdaemon.Daemon(env=env, wait_ready=False, device=first.device)
            try:
                self.assertIn("READY=1", sock.recv(4096).decode().split("\n"), second.log())
                self.assertGreaterEqual(kqdaemon.abi_version(first.device) or 0, 2)
            finally:
                self.assertEqual(second.stop(), 0)
                sock.close()
        finally:
            first.stop()

    def test_no_ready_when_start_fails(self):
        sock, address = notify_socket(False)
        env = dict(os.environ, NOTIFY_SOCKET=address)
        # A device path in a directory that does not exist cannot be served.
        p = subprocess.run([kqdaemon.runfile("daemon/kqueued"), "--device",
                            "/nonexistent-kqueued-dir/kqueue", "--transport", "fuse",
                            "--foreground"], env=env, stderr=subprocess.PIPE, timeout=20)
        self.assertNotEqual(p.returncode, 0)
        sock.settimeout(0.5)
        messages = []
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
        self.assertFalse(any("READY=1" in m.split("\n") for m in messages), messages)
        self.assertIn("kqueued: error:", p.stderr.decode())


class LogTest(unittest.TestCase):
    def test_levels_and_journal_prefix(self):
        env = dict(os.environ, JOURNAL_STREAM="8:12345")
        d = kqdaemon.Daemon(env=env, extra_args=["--log-level", "info"])
        status = d.stop()
        self.assertEqual(status, 0)
        lines = d.log().splitlines()
        # notice (5) when serving and stopping, info (6) once stopped.
        self.assertTrue(any(l.startswith("<5>kqueued ") and "serving" in l for l in lines), lines)
        self.assertIn("<5>Terminated, stopping", lines)
        self.assertIn("<6>stopped", lines)

    def test_log_level_filters(self):
        d = kqdaemon.Daemon(extra_args=["--log-level", "error"])
        d.stop()
        self.assertEqual(d.log(), "")
        d = kqdaemon.Daemon()
        d.stop()
        lines = d.log().splitlines()
        self.assertTrue(any(l.startswith("kqueued: notice: ") for l in lines), lines)
        self.assertFalse(any(" info: " in l for l in lines), lines)

    def test_bad_level_is_a_usage_error(self):
        p = subprocess.run([kqdaemon.runfile("daemon/kqueued"), "--log-level", "loud"],
                           stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage:", p.stderr.decode())

    def test_one_client_cannot_flood_the_log(self):
        d = kqdaemon.Daemon(extra_args=["--log-level", "debug"])
        try:
            fd = os.open(d.device, os.O_RDWR)
            try:
                for _ in range(500):  # unknown ioctls: one debug line each, if not limited
                    with self.assertRaises(OSError):
                        fcntl.ioctl(fd, 0x6B7F, 0)
            finally:
                os.close(fd)
            # The daemon still serves, and told kqstat what it dropped.
            self.assertGreaterEqual(kqdaemon.abi_version(d.device) or 0, 2)
        finally:
            d.stop()
        unknown = [l for l in d.log().splitlines() if "unknown ioctl" in l]
        # A burst of 10, then about one a second.
        self.assertGreaterEqual(len(unknown), 10)
        self.assertLess(len(unknown), 40, unknown)

    def test_a_limit_reached_is_logged(self):
        sys.path.insert(0, os.path.dirname(os.path.dirname(
            kqdaemon.runfile("client/python/kqueued/__init__.py"))))
        import kqueued
        d = kqdaemon.Daemon()
        try:
            os.environ["KQUEUE_DEVICE"] = d.device
            kq = kqueued.kqueue()
            # 4096 timers per user: the 4097th fails with ENOMEM.
            changes = [kqueued.kevent(i, kqueued.KQ_FILTER_TIMER, kqueued.KQ_EV_ADD, 0, 3600000)
                       for i in range(4100)]
            errors = kq.control(changes, 8)
            self.assertTrue(errors and all(e.flags & kqueued.KQ_EV_ERROR for e in errors))
            self.assertEqual(errors[0].data, 12)  # ENOMEM
            kq.close()
        finally:
            d.stop()
        lines = [l for l in d.log().splitlines() if "per-user limit" in l]
        self.assertTrue(lines, d.log())
        self.assertEqual(lines[0], "kqueued: warning: per-user limit of 4096 timers reached (uid 0)")


if __name__ == "__main__":
    unittest.main(verbosity=2)
