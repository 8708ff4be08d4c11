"""The examples in client/python/examples, run as programs against the daemon.

Each runs only if the daemon implements its filter (skipped otherwise)."""

import os
import subprocess
import sys

import pytest

import kqueued

from kq_helpers import require_filter

HERE = os.path.dirname(os.path.abspath(__file__))


def _examples_dir():
    candidates = []
    srcdir = os.environ.get("TEST_SRCDIR")
    if srcdir:
        ws = os.environ.get("TEST_WORKSPACE", "kqueued")
        candidates.append(os.path.join(srcdir, ws, "client", "python", "examples"))
    candidates.append(os.path.join(HERE, "..", "..", "client", "python", "examples"))
    for c in candidates:
        if os.path.isdir(c):
            return c
    pytest.fail("client/python/examples not found")


def _env(daemon):
    env = dict(os.environ)
    module_dir = os.path.dirname(os.path.dirname(os.path.abspath(kqueued.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [module_dir] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["KQUEUE_DEVICE"] = daemon.device
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(daemon, script, *args):
    return subprocess.Popen(
        [sys.executable, os.path.join(_examples_dir(), script)] + list(args),
        env=_env(daemon), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("script", ["file_watch.py", "proc_watch.py"])
def test_examples_compile_and_show_help(daemon, script):
    out = subprocess.run(
        [sys.executable, os.path.join(_examples_dir(), script), "--help"],
        env=_env(daemon), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout


def test_file_watch_reports_a_write(daemon, kq, tmp_path):
    require_filter(kq, kqueued.KQ_FILTER_VNODE)
    path = tmp_path / "watched.txt"
    path.write_text("one\n")
    proc = _start(daemon, "file_watch.py", "--count", "1", "--timeout", "10", str(path))
    try:
        first = proc.stdout.readline()
        assert first.startswith("watching"), (first, proc.stderr.read())
        with open(path, "a") as f:
            f.write("two\n")
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err)
    assert "%s: " % path in out and "WRITE" in out, out


def test_file_watch_sees_the_delete(daemon, kq, tmp_path):
    require_filter(kq, kqueued.KQ_FILTER_VNODE)
    path = tmp_path / "doomed.txt"
    path.write_text("x")
    proc = _start(daemon, "file_watch.py", "--timeout", "10", str(path))
    try:
        assert proc.stdout.readline().startswith("watching")
        os.unlink(path)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err)
    assert "DELETE" in out, out


def test_proc_watch_follows_fork_exec_exit(daemon, kq):
    require_filter(kq, kqueued.KQ_FILTER_PROC)
    proc = _start(daemon, "proc_watch.py", "--timeout", "10", "--",
                  "/bin/sh", "-c", "sleep 0.2; /bin/true & wait; exit 3")
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err)
    lines = out.splitlines()
    assert lines[0].startswith("watching "), out
    pid = int(lines[0].split()[1])
    assert "%d: exec" % pid in lines, out
    assert "%d: fork" % pid in lines, out
    assert lines[-1] == "%d: exit status 3" % pid, out


def test_proc_watch_of_a_running_pid(daemon, kq):
    require_filter(kq, kqueued.KQ_FILTER_PROC)
    sleeper = subprocess.Popen(["/bin/sh", "-c", "sleep 1; exit 7"])
    try:
        proc = _start(daemon, "proc_watch.py", "--timeout", "10", str(sleeper.pid))
        out, err = proc.communicate(timeout=30)
    finally:
        sleeper.wait()
    assert proc.returncode == 0, (out, err)
    # Not proc_watch's child (it is ours): the daemon still reports the exit.
    assert out.splitlines()[-1].startswith("%d: exit" % sleeper.pid), out
