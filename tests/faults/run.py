#!/usr/bin/env python3
"""Runs pop3gw's fault tests (tests/faults/test_*.py).

    python3 tests/faults/run.py --build build [-k PATTERN] [-q] [-x] [--keep]

--build is the directory with pop3gw (build, or build/san for the
sanitizer build). -k keeps tests whose module.Class.test name contains
PATTERN (may be repeated). The last line printed is `N passed, N failed`
(`, N skipped` when some were skipped); the exit status is non-zero when
anything failed or nothing ran. When a test fails, the tail of what the
gateway logged during it is printed.
"""

import argparse
import atexit
import importlib.util
import os
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
IT = os.path.join(os.path.dirname(HERE), "integration")


def _load_it_runner():
    """The integration runner (its result class prints the process logs of a
    failed test; its counts() and report() close a run), from
    tests/integration/run.py."""
    spec = importlib.util.spec_from_file_location("it_run", os.path.join(IT, "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _timed(base):
    """Adds per-test wall time to a result class (printed slowest first)."""
    class Timed(base):
        def startTest(self, test):
            self._t0 = time.monotonic()
            super().startTest(test)

        def stopTest(self, test):
            super().stopTest(test)
            self.durations = getattr(self, "durations", [])
            self.durations.append((time.monotonic() - self._t0, test.id()))
    return Timed


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="directory holding pop3gw")
    ap.add_argument("-k", action="append", dest="patterns", metavar="PATTERN")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("-x", "--failfast", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the logs")
    ap.add_argument("--durations", type=int, default=0, metavar="N",
                    help="print the N slowest tests")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    os.environ["PGW_IT_BUILD"] = build
    sys.path.insert(0, IT)
    sys.path.insert(0, HERE)
    import harness  # noqa: E402

    it_run = _load_it_runner()

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
                                     resultclass=_timed(it_run.LogDumpingResult),
                                     failfast=args.failfast)
    t0 = time.monotonic()
    try:
        result = runner.run(suite)
    except KeyboardInterrupt as e:
        harness.stop_all()
        print("\ninterrupted (%s); logs kept in %s" % (e, harness._run_dir), file=sys.stderr)
        return 130
    elapsed = time.monotonic() - t0
    if args.durations:
        for d, name in sorted(getattr(result, "durations", []), reverse=True)[:args.durations]:
            print("%6.2fs  %s" % (d, name))
    passed, failed, skipped = it_run.counts(result)
    return it_run.report(harness, "fault tests", elapsed, passed, failed, skipped, args.keep)


if __name__ == "__main__":
    sys.exit(main())
