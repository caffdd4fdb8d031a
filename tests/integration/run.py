#!/usr/bin/env python3
"""Runs pop3gw's integration tests.

    python3 tests/integration/run.py --build build [-k PATTERN] [-q] [-x] [--durations N]

--build is the directory with the binaries pop3gw and pop3gw-maildir
(`make integration` passes build, the sanitizer build passes build/san).
-k keeps only tests whose full name (module.Class.test_method) contains
PATTERN (or matches it as a shell-style pattern when it has wildcards); it
may be given several times. The last line printed is `N passed, N failed`
(with `, N skipped` when tests were skipped); the exit status is non-zero
when anything failed or no test ran. With PGW_REQUIRE_ALL=1 in the
environment (as .ci/run sets it) a skipped test is named and counts as
failed. PGW_TIME_SCALE (default 1) multiplies upper time bounds.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


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
    ap.add_argument("--durations", type=int, default=0, metavar="N",
                    help="print the N slowest tests")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    os.environ["PGW_IT_BUILD"] = build
    for name in ("pop3gw", "pop3gw-maildir"):
        if not os.access(os.path.join(build, name), os.X_OK):
            print("warning: %s not found; tests that need it will fail" %
                  os.path.join(build, name), file=sys.stderr)

    sys.path.insert(0, HERE)
    import harness  # noqa: E402  (after sys.path is set)

    ran = harness.run_suite(HERE, args.patterns, args.quiet, args.failfast)
    if ran is None:
        return 130
    result, elapsed = ran
    harness.print_durations(result, args.durations)
    passed, failed, skipped = harness.counts(result)
    return harness.report("integration tests", elapsed, passed, failed, skipped, args.keep,
                          harness.skips(result))

if __name__ == "__main__":
    sys.exit(main())
