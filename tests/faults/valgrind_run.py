#!/usr/bin/env python3
"""Runs the integration suite (tests/integration/, unchanged) with every
gateway process under valgrind, then checks valgrind's verdict on each.

    python3 tests/faults/valgrind_run.py --build build [-k PATTERN] [-q] [--keep]

The harness has no hook for a wrapper command, so this runner imports it and
wraps harness.Gateway.argv: each gateway runs as

    valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
             --error-exitcode=99 --track-fds=no --log-file=DIR/valgrind.%p.log
             pop3gw ...

A gateway with a memory error or a definite/indirect leak exits 99 instead of
0, which the harness already treats as a failed test (it requires exit 0 on
SIGTERM). After the run every valgrind log is read again: each must have an
ERROR SUMMARY of 0 errors and no definitely/indirectly lost bytes, and the
totals are printed. Use the normal build (not build/san: ASan and valgrind
do not mix).

Every integration test runs (the 50 MB streaming and 100-session tests
included: they pass under valgrind too). The last line is
`N passed, N failed` (`, N skipped`); with PGW_REQUIRE_ALL=1 a skipped test
is named and counts as failed.
"""

import argparse
import glob
import os
import re
import shutil
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
IT = os.path.join(os.path.dirname(HERE), "integration")

VALGRIND = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99", "--track-fds=no", "--num-callers=30"]

def parse_log(path):
    """(errors, definitely lost, indirectly lost, complete) from one log."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"ERROR SUMMARY: ([\d,]+) errors", text)
    errors = int(m.group(1).replace(",", "")) if m else None

    def lost(kind):
        mm = re.search(kind + r" lost: ([\d,]+) bytes", text)
        return int(mm.group(1).replace(",", "")) if mm else 0
    return errors, lost("definitely"), lost("indirectly"), m is not None, text


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("-k", action="append", dest="patterns", metavar="PATTERN")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep logs (valgrind's included)")
    ap.add_argument("--durations", type=int, default=0, metavar="N",
                    help="print the N slowest tests")
    args = ap.parse_args()

    if not shutil.which("valgrind"):
        print("valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 2
    build = os.path.abspath(args.build)
    if os.path.basename(build) == "san":
        print("use the normal build: ASan binaries cannot run under valgrind", file=sys.stderr)
        return 2
    os.environ["PGW_IT_BUILD"] = build
    sys.path.insert(0, IT)
    import harness  # noqa: E402

    # Valgrind starts slowly and runs 20-50x slower: more time to start and
    # to stop (the harness' defaults are 15 s).
    harness.START_DEADLINE = harness.upper(90.0)
    orig_stop = harness.Proc.stop

    def stop(self, sig=signal.SIGTERM, timeout=None):
        return orig_stop(self, sig, max(timeout or 0, harness.upper(90.0)))
    harness.Proc.stop = stop

    vg_dir = harness.new_dir("valgrind")
    harness.UNDER_VALGRIND = True  # memory bounds take valgrind's budget
    orig_argv = harness.Gateway.argv

    def argv(self):
        return VALGRIND + ["--log-file=%s/valgrind.%%p.log" % vg_dir] + orig_argv(self)
    harness.Gateway.argv = argv

    ran = harness.run_suite(IT, args.patterns, args.quiet)
    if ran is None:
        return 130
    result, elapsed = ran
    harness.print_durations(result, args.durations)

    # Valgrind's verdict on every gateway process.
    logs = sorted(glob.glob(os.path.join(vg_dir, "valgrind.*.log")))
    bad, incomplete = [], []
    tot_err = tot_def = tot_ind = 0
    for path in logs:
        parsed = parse_log(path)
        if parsed is None:
            continue
        errors, definite, indirect, complete, text = parsed
        if not complete:
            # killed (SIGKILL by a test on purpose, or never started)
            incomplete.append(path)
            continue
        tot_err += errors
        tot_def += definite
        tot_ind += indirect
        if errors or definite or indirect:
            bad.append(path)
    print("valgrind: %d gateway processes checked (%d without a summary: killed on purpose "
          "or cut short), %d errors, %d bytes definitely lost, %d bytes indirectly lost"
          % (len(logs) - len(incomplete), len(incomplete), tot_err, tot_def, tot_ind))
    for path in bad:
        print("---- %s ----" % path)
        print(harness.log_tail(path, max_lines=120))
    passed, failed, skipped = harness.counts(result)
    if bad:
        failed += 1
        print("valgrind found problems in %d processes (counted as one failure)" % len(bad))
    if not logs:
        failed += 1
        print("no valgrind log was written: the wrapper did not run")
    return harness.report("integration tests under valgrind", elapsed, passed, failed,
                          skipped, args.keep, harness.skips(result))


if __name__ == "__main__":
    sys.exit(main())
