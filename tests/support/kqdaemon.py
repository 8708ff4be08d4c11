"""A private kqueued for stdlib-only Python test scripts (no pytest).

Daemon(binary, extra_args, env) starts `kqueued --foreground --transport fuse`
on a fresh /tmp/kqueued-ops-XXXXXX/kqueue (not under TEST_TMPDIR, so other
users reach the allow_other mount), waits until the device answers
KQ_IOC_VERSION, and stops it with SIGTERM on stop(). Its stderr is kept in
a file: log() returns it.
"""

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time

# _IOR('k', 0x41, struct kq_version): proto/kqueue_abi.h.
KQ_IOC_VERSION = 0x80406B41


def runfile(relative):
    """Path of `relative` in the test's runfiles, else in the source tree."""
    srcdir = os.environ.get("TEST_SRCDIR")
    if srcdir:
        path = os.path.join(srcdir, os.environ.get("TEST_WORKSPACE", "kqueued"), relative)
        if os.path.exists(path):
            return path
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    for candidate in (os.path.join(root, relative), os.path.join(root, "bazel-bin", relative)):
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(relative)


def abi_version(device):
    """The daemon's KQ_ABI_VERSION through `device`, or None."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        buf = bytearray(64)
        fcntl.ioctl(fd, KQ_IOC_VERSION, buf, True)
        return int.from_bytes(buf[0:4], "little")
    except OSError:
        return None
    finally:
        os.close(fd)


class Daemon(object):
    def __init__(self, binary=None, extra_args=(), env=None, wait_ready=True, device=None):
        """`device`: serve this path (in an existing directory) instead of a fresh one."""
        self.binary = binary or runfile("daemon/kqueued")
        if device:
            self.directory = tempfile.mkdtemp(prefix="kqueued-ops-", dir="/tmp")
            self.device = device
        else:
            self.directory = tempfile.mkdtemp(prefix="kqueued-ops-", dir="/tmp")
            os.chmod(self.directory, 0o755)
            self.device = os.path.join(self.directory, "kqueue")
        self.log_path = os.path.join(self.directory, "stderr.log")
        self._final_log = None
        args = [self.binary, "--device", self.device, "--transport", "fuse",
                "--foreground"] + list(extra_args)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log,
                                         env=env if env is not None else os.environ)
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if abi_version(self.device) is not None:
                return
            if self.proc.poll() is not None:
                raise RuntimeError("kqueued exited during start-up:\n" + self.log())
            time.sleep(0.02)
        raise RuntimeError("kqueued not ready within %.0f s:\n%s" % (timeout, self.log()))

    def log(self):
        """The daemon's stderr so far (kept after stop())."""
        if self._final_log is not None:
            return self._final_log
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Stops the daemon; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        status = self.proc.returncode
        if self._final_log is None:
            self._final_log = self.log()
        # The mount is gone once the daemon has stopped; clean the rest.
        if not os.path.ismount(self.device):
            shutil.rmtree(self.directory, ignore_errors=True)
        return status
