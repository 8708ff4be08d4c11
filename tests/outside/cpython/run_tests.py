"""Runs CPython's kqueue tests with select.kqueue served by kqueued.

    python3 run_tests.py [--timeout SEC] [--list] LIB_DIR TEST_ID...

LIB_DIR is the directory that holds CPython's `test` package for this
interpreter's version (a CPython tree's Lib/, or Debian's /usr/lib/python3.X
with libpython3.X-testsuite). Each TEST_ID is a unittest name, e.g.
test.test_kqueue or test.test_selectors.KqueueSelectorTestCase.

Before anything imports `selectors` or `asyncio`, the `select` module gets
the project's Python module (client/python/kqueued, found on PYTHONPATH) in
the places CPython's own kqueue support sits: select.kqueue, select.kevent
and every select.KQ_* constant. `selectors` then defines KqueueSelector and
asyncio's tests define KqueueEventLoopTests, exactly as on a BSD.

Every test runs under a time limit (SIGALRM; a test that outlives it fails
with "timed out"). One line per test goes to stdout:
    cpython-result: TEST: passed | failed: REASON | skipped: REASON
"""

import argparse
import signal
import sys
import traceback


def install_kqueued_as_select():
    import select
    import kqueued
    select.kqueue = kqueued.kqueue
    select.kevent = kqueued.kevent
    for name in dir(kqueued):
        if name.startswith("KQ_"):
            setattr(select, name, getattr(kqueued, name))
    if "selectors" in sys.modules or "asyncio" in sys.modules:
        raise SystemExit("selectors/asyncio were imported before select was patched")


class TimedOut(Exception):
    pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=int, default=120)
    parser.add_argument("--list", action="store_true", help="list the tests only")
    parser.add_argument("lib_dir")
    parser.add_argument("tests", nargs="+")
    args = parser.parse_args()

    install_kqueued_as_select()
    sys.path.insert(0, args.lib_dir)

    import unittest

    def on_alarm(signum, frame):
        raise TimedOut("timed out after %d s" % args.timeout)

    signal.signal(signal.SIGALRM, on_alarm)

    class Result(unittest.TextTestResult):
        def startTest(self, test):
            # Again for every test: asyncio's signal tests take SIGALRM over
            # and hand it back as SIG_DFL.
            signal.signal(signal.SIGALRM, on_alarm)
            signal.alarm(args.timeout)
            super().startTest(test)

        def stopTest(self, test):
            signal.alarm(0)
            super().stopTest(test)

        def _line(self, test, verdict):
            print("cpython-result: %s: %s" % (test.id(), verdict), flush=True)

        def addSuccess(self, test):
            super().addSuccess(test)
            self._line(test, "passed")

        def _reason(self, err):
            exc_type, exc, tb = err
            if exc_type is TimedOut:
                return str(exc)
            # The innermost frame of the test file and the exception.
            frames = traceback.extract_tb(tb)
            where = ""
            for f in frames:
                if "/test/" in f.filename:
                    where = "%s:%d: " % (f.filename.split("/test/", 1)[1], f.lineno)
            text = "".join(traceback.format_exception_only(exc_type, exc)).strip()
            return (where + text).replace("\n", " ")[:400]

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._line(test, "failed: " + self._reason(err))

        def addError(self, test, err):
            super().addError(test, err)
            self._line(test, "failed: " + self._reason(err))

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._line(test, "skipped: " + str(reason).replace("\n", " "))

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._line(test, "passed")

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._line(test, "failed: unexpected success")

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name in args.tests:
        try:
            suite.addTests(loader.loadTestsFromName(name))
        except unittest.SkipTest as e:
            print("cpython-result: %s: skipped: %s" % (name, e), flush=True)
        except Exception as e:  # an import error is a failure of the module
            print("cpython-result: %s: failed: cannot load: %s" % (name, e), flush=True)

    if args.list:
        def walk(s):
            for t in s:
                if isinstance(t, unittest.TestSuite):
                    yield from walk(t)
                else:
                    yield t
        for t in walk(suite):
            print(t.id())
        return 0

    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=0, resultclass=Result)
    result = runner.run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
