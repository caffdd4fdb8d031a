#!/usr/bin/env python3
"""Runs pop3gw's integration tests.

    python3 tests/integration/run.py --build build [-k PATTERN] [-q] [-x]

--build is the directory with the binaries pop3gw and pop3gw-maildir
(`make integration` passes build, the sanitizer build passes build/san).
-k keeps only tests whose full name (module.Class.test_method) contains
PATTERN (or matches it as a shell-style pattern when it has wildcards); it
may be given several times. The last line printed is `N passed, N failed`
(with `, N skipped` when tests were skipped); the exit status is non-zero
when anything failed or no test ran.
"""

import argparse
import atexit
import os
import shutil
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


class LogDumpingResult(unittest.TextTestResult):
    """Prints what the processes of a failed test wrote to their logs while
    it ran (the tail of each log)."""

    def startTest(self, test):
        import harness
        self._offsets = {}
        for name, path in harness.known_logs():
            try:
                self._offsets[path] = os.path.getsize(path)
            except OSError:
                self._offsets[path] = 0
        super().startTest(test)

    def _dump(self, test):
        import harness
        offsets = getattr(self, "_offsets", {})
        for name, path in harness.known_logs():
            start = offsets.get(path, 0)
            try:
                if os.path.getsize(path) <= start:
                    continue
            except OSError:
                continue
            self.stream.writeln("---- %s log (%s) during %s ----" % (name, path, test))
            self.stream.writeln(harness.log_tail(path, start, max_lines=60))
        self.stream.flush()

    def addError(self, test, err):
        super().addError(test, err)
        self._dump(test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._dump(test)


def counts(result):
    """(passed, failed, skipped) of a unittest result."""
    skipped = len(result.skipped)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = max(result.testsRun - skipped - failed - len(result.expectedFailures), 0)
    return passed, failed, skipped


def report(harness, what, elapsed, passed, failed, skipped, keep):
    """Keeps the run directory when something failed (or when asked),
    prints the time and the closing `N passed, N failed` line; returns the
    exit status."""
    rd = harness._run_dir
    if rd:
        if failed or keep:
            print("logs and mail roots kept in %s" % rd)
        else:
            shutil.rmtree(rd, ignore_errors=True)
    print("%s took %.1fs" % (what, elapsed))
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    sys.stdout.flush()
    print(line)
    sys.stdout.flush()
    return 1 if failed or passed + failed + skipped == 0 else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build",
                    help="directory holding pop3gw and pop3gw-maildir (default: build)")
    ap.add_argument("-k", action="append", dest="patterns", metavar="PATTERN",
                    help="only run tests whose name contains PATTERN")
    ap.add_argument("-q", "--quiet", action="store_true", help="less output")
    ap.add_argument("-x", "--failfast", action="store_true", help="stop at the first failure")
    ap.add_argument("--keep", action="store_true", help="keep logs and mail roots")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    os.environ["PGW_IT_BUILD"] = build
    for name in ("pop3gw", "pop3gw-maildir"):
        if not os.access(os.path.join(build, name), os.X_OK):
            print("warning: %s not found; tests that need it will fail" %
                  os.path.join(build, name), file=sys.stderr)

    sys.path.insert(0, HERE)
    import harness  # noqa: E402  (after sys.path is set)

    # Never leave a backend or gateway behind, even when stopped early.
    atexit.register(harness.stop_all)

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [p if any(c in p for c in "*?[") else "*%s*" % p
                                   for p in args.patterns]
    suite = loader.discover(start_dir=HERE, pattern="test_*.py", top_level_dir=HERE)

    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=1 if args.quiet else 2,
                                     resultclass=LogDumpingResult, failfast=args.failfast)
    t0 = time.monotonic()
    try:
        result = runner.run(suite)
    except KeyboardInterrupt as e:
        harness.stop_all()
        print("\ninterrupted (%s); logs kept in %s" % (e, harness._run_dir), file=sys.stderr)
        return 130
    elapsed = time.monotonic() - t0

    passed, failed, skipped = counts(result)
    return report(harness, "integration tests", elapsed, passed, failed, skipped, args.keep)


if __name__ == "__main__":
    sys.exit(main())
