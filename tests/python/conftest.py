"""pytest fixtures: a private kqueued for the session, and a fresh kqueue per test.

The daemon binary is $KQUEUED_BIN (the Bazel target sets it to the runfiles
path of //daemon:kqueued), else <repo>/bazel-bin/daemon/kqueued. It serves a
FUSE device in a fresh /tmp/kqueued-pytest-XXXXXX directory (not under
TEST_TMPDIR: like the C fixture, so the mount is reachable by every user);
$KQUEUE_DEVICE points the module at it.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))

# Outside Bazel, find the module in the source tree.
try:
    import kqueued  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(_REPO, "client", "python"))
    import kqueued  # noqa: F401

from kqueued import _abi  # noqa: E402


def _daemon_binary():
    env = os.environ.get("KQUEUED_BIN")
    if env:
        return env
    return os.path.join(_REPO, "bazel-bin", "daemon", "kqueued")


class Daemon(object):
    def __init__(self, binary, directory, device, proc, log_path):
        self.binary = binary
        self.directory = directory
        self.device = device
        self.proc = proc
        self.log_path = log_path

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def _device_ready(device):
    import fcntl
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        v = _abi.KqVersion()
        fcntl.ioctl(fd, _abi.KQ_IOC_VERSION, v, True)
        # Any version answers: the daemon is up (kqueue() checks the rest).
        return v.abi_version >= _abi.KQ_ABI_REQUIRED
    except OSError:
        return False
    finally:
        os.close(fd)


def start_daemon(prefix="kqueued-pytest-"):
    """A private kqueued serving a FUSE device in a fresh /tmp directory,
    ready (it answered KQ_IOC_VERSION); stop it with stop_daemon()."""
    binary = _daemon_binary()
    if not os.access(binary, os.X_OK):
        pytest.fail("kqueued binary not found at %s: build //daemon:kqueued or "
                    "set KQUEUED_BIN" % binary, pytrace=False)
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: the FUSE transport cannot run",
                    pytrace=False)
    directory = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(directory, 0o755)
    device = os.path.join(directory, "kqueue")
    log_dir = os.environ.get("TEST_UNDECLARED_OUTPUTS_DIR") or directory
    log_path = os.path.join(log_dir, os.path.basename(directory) + ".log")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [binary, "--device", device, "--transport", "fuse", "--foreground"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        close_fds=True)
    log.close()
    d = Daemon(binary, directory, device, proc, log_path)
    deadline = time.monotonic() + 10
    while not _device_ready(device):
        if proc.poll() is not None:
            pytest.fail("kqueued exited during start-up (status %s):\n%s"
                        % (proc.returncode, d.log()), pytrace=False)
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail("kqueued did not become ready within 10 s:\n%s"
                        % d.log(), pytrace=False)
        time.sleep(0.02)
    return d


def stop_daemon(d):
    """SIGTERM (the daemon unmounts), then removes what is left."""
    proc = d.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if os.path.dirname(d.log_path) == d.directory:
        try:
            os.unlink(d.log_path)
        except OSError:
            pass
    for _ in range(50):
        try:
            if os.path.lexists(d.device):
                os.unlink(d.device)
            os.rmdir(d.directory)
            break
        except OSError:
            time.sleep(0.1)


@pytest.fixture(scope="session")
def daemon():
    d = start_daemon()
    old = os.environ.get(_abi.KQ_DEVICE_ENV)
    os.environ[_abi.KQ_DEVICE_ENV] = d.device
    try:
        yield d
    finally:
        if old is None:
            os.environ.pop(_abi.KQ_DEVICE_ENV, None)
        else:
            os.environ[_abi.KQ_DEVICE_ENV] = old
        stop_daemon(d)


@pytest.fixture
def kq(daemon):
    q = kqueued.kqueue()
    try:
        yield q
    finally:
        q.close()


@pytest.fixture
def private_daemon():
    """start() gives a daemon of the test's own (to stop or kill in the
    test); whatever is left is stopped afterwards."""
    started = []

    def start():
        d = start_daemon(prefix="kqueued-pytest-own-")
        started.append(d)
        return d

    yield start
    for d in started:
        stop_daemon(d)
