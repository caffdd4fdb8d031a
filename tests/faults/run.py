#!/usr/bin/env python3
"""Runs pop3gw's fault tests (tests/faults/test_*.py).

    python3 tests/faults/run.py --build build [-k PATTERN] [-q] [-x] [--keep]

--build is the directory with pop3gw (build, or build/san for the
sanitizer build). -k keeps tests whose module.Class.test name contains
PATTERN (may be repeated). The last line printed is `N passed, N failed`
(`, N skipped` when some were skipped); the exit status is non-zero when
anything failed or nothing ran. When a test fails, the tail of what the
gateway logged during it is printed. With PGW_REQUIRE_ALL=1 a skipped test
is named and counts as failed.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IT = os.path.join(os.path.dirname(HERE), "integration")


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

    ran = harness.run_suite(HERE, args.patterns, args.quiet, args.failfast)
    if ran is None:
        return 130
    result, elapsed = ran
    harness.print_durations(result, args.durations)
    passed, failed, skipped = harness.counts(result)
    return harness.report("fault tests", elapsed, passed, failed, skipped, args.keep,
                          harness.skips(result))

if __name__ == "__main__":
    sys.exit(main())
