#!/usr/bin/env python3
"""Summarises cargo-nextest's JUnit report (profile ci) for scripts/test.

Prints the tests run per crate (passed, failed, skipped), the slowest tests
(to keep .config/nextest.toml's slow-timeout overrides honest), and as the
last line the totals in the plain form CI reads:
`tests: N passed, N failed, N skipped`. Exits 1 when the report is missing
or holds no test, so that a run that ran nothing never looks green.

Usage: junit-summary.py <junit.xml>
"""

import collections
import sys
import xml.etree.ElementTree as ElementTree

# How many of the slowest tests to list.
SLOWEST_SHOWN = 8


def main(path):
    try:
        suites = ElementTree.parse(path).getroot().iter("testsuite")
    except (OSError, ElementTree.ParseError) as error:
        print(f"no JUnit report from nextest ({path}): {error}", file=sys.stderr)
        return 1
    counts = collections.defaultdict(collections.Counter)
    durations = []
    for suite in suites:
        # A suite is one test binary: "crate" (its unit tests) or
        # "crate::binary" / "crate::bin/name".
        crate = suite.get("name").split("::")[0]
        for case in suite.iter("testcase"):
            if case.find("skipped") is not None:
                outcome = "skipped"
            elif case.find("failure") is not None or case.find("error") is not None:
                outcome = "failed"
            else:
                outcome = "passed"
            counts[crate][outcome] += 1
            durations.append((float(case.get("time", 0)), f"{suite.get('name')} {case.get('name')}"))
    total = collections.Counter()
    for crate in sorted(counts):
        count = counts[crate]
        total.update(count)
        print(f"  {crate:<20} {sum(count.values()):5} tests: {count['passed']} passed, "
              f"{count['failed']} failed, {count['skipped']} skipped")
    print("slowest tests:")
    for seconds, name in sorted(durations, reverse=True)[:SLOWEST_SHOWN]:
        print(f"  {seconds:8.1f} s  {name}")
    print(f"tests: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    return 0 if total["passed"] + total["failed"] > 0 else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
