"""A detached daemon logs to syslog, its stderr forwarded there too.

Runs in a private mount namespace (the test's BUILD wraps it in
`unshare -m`): a tmpfs over /dev holds just fuse, null and a datagram
socket at /dev/log that plays syslogd. The daemon is started without
--foreground, so it detaches once serving and switches to syslog.
"""

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import fcntl
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import kqdaemon  # noqa: E402

LOG_DAEMON = 3 << 3


def private_dev():
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/dev"], check=True)
    os.mknod("/dev/fuse", 0o666 | stat.S_IFCHR, os.makedev(10, 229))
    os.mknod("/dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind("/dev/log")
    os.chmod("/dev/log", 0o666)
    log.settimeout(10)
    return log


class SyslogTest(unittest.TestCase):
    @staticmethod
    def kill_quietly(pidfd):
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(pidfd)

    def test_detached_daemon_logs_to_syslog(self):
        log = private_dev()
        directory = tempfile.mkdtemp(prefix="kqueued-syslog-", dir="/tmp")
        # Cleanups run last-in first-out: this one after the daemon is gone.
        self.addCleanup(shutil.rmtree, directory, True)
        device = os.path.join(directory, "kqueue")
        # Detaches once serving: the parent exits 0 then.
        p = subprocess.run([kqdaemon.runfile("daemon/kqueued"), "--device", device,
                            "--transport", "fuse", "--log-level", "debug"],
                           stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        # Until detached, it wrote to stderr.
        self.assertIn(b"kqueued: notice: ", p.stderr)
        self.assertGreaterEqual(kqdaemon.abi_version(device) or 0, 2)
        # A client-caused line (debug) now goes to syslog, with its priority.
        fd = os.open(device, os.O_RDWR)
        with self.assertRaises(OSError):
            fcntl.ioctl(fd, 0x6B7E, 0)
        os.close(fd)
        messages = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = log.recv(4096).decode(errors="replace")
            messages.append(m)
            if "unknown ioctl" in m:
                break
        line = [m for m in messages if "unknown ioctl" in m]
        self.assertTrue(line, messages)
        self.assertTrue(line[0].startswith("<%d>" % (LOG_DAEMON | 7)), line)
        self.assertRegex(line[0], r"kqueued\[\d+\]: thread \d+: unknown ioctl 0x00006b7e")
        pid = int(line[0].split("kqueued[")[1].split("]")[0])
        # The daemon by its pidfd, not its reusable number.
        pidfd = os.pidfd_open(pid)
        self.addCleanup(self.kill_quietly, pidfd)
        self.addCleanup(log.close)
        # SIGTERM: the stop is logged to syslog too (notice).
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        stop = []
        while not any("stopping" in m for m in stop):
            stop.append(log.recv(4096).decode(errors="replace"))
        self.assertTrue(any(m.startswith("<%d>" % (LOG_DAEMON | 5)) and "Terminated, stopping" in m
                            for m in stop), stop)
        for _ in range(200):
            if not os.path.ismount(device):
                break
            time.sleep(0.05)
        self.assertFalse(os.path.ismount(device))


if __name__ == "__main__":
    unittest.main(verbosity=2)
