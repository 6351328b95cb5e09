#!/usr/bin/env python3
"""Summarises an Autobahn|Testsuite fuzzingclient report (REPORTDIR/index.json) for scripts/autobahn.

    autobahn_summary.py [--markdown] [--junit=FILE] REPORTDIR AGENT EXPECTED_CASES_FILE

EXPECTED_CASES_FILE lists the case ids that were asked for, one per line. Prints a table by case group (counts per
outcome), then every case whose outcome is not OK. Exits 1 when a case FAILED, when an expected case has no result
(missing) and when the agent is not in the report at all; 0 otherwise. NON-STRICT, INFORMATIONAL and
UNIMPLEMENTED are reported, not failures (UNIMPLEMENTED would mean a permessage-deflate offer the bridge declined:
this version of the suite makes none it declines). With --junit=FILE it also writes every
expected case as a JUnit test case (FAILED and missing ones as failures, UNIMPLEMENTED as skipped), so that
scripts/test counts Autobahn cases as it counts the others; without a report at all, every expected case is
missing. Each agent is one <testsuite> in FILE: a suite of another agent already there is kept (scripts/autobahn
removes the file before its first run).
"""

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter, OrderedDict
from pathlib import Path

GROUPS = OrderedDict(
    [
        ("1", "Framing (text and binary messages)"),
        ("2", "Pings/Pongs"),
        ("3", "Reserved bits"),
        ("4", "Opcodes"),
        ("5", "Fragmentation"),
        ("6", "UTF-8 handling"),
        ("7", "Close handling"),
        ("9", "Limits/Performance"),
        ("10", "Misc (auto-fragmentation)"),
        ("12", "permessage-deflate"),
        ("13", "permessage-deflate"),
    ]
)
OUTCOMES = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "missing"]


def case_key(case_id: str):
    return tuple(int(part) for part in case_id.split("."))


def write_junit(path: str, agent: str, outcome: dict, results: dict) -> None:
    root = ET.Element("testsuites")
    try:
        previous = ET.parse(path).getroot()
        if previous.tag == "testsuites":
            root = previous
    except (OSError, ET.ParseError):
        pass
    for old in [s for s in root.findall("testsuite") if s.get("name") == f"autobahn.{agent}"]:
        root.remove(old)
    suite = ET.SubElement(root, "testsuite", name=f"autobahn.{agent}", tests=str(len(outcome)))
    for case_id in sorted(outcome, key=case_key):
        case = ET.SubElement(suite, "testcase", classname=f"autobahn.{agent}", name=case_id)
        behavior = outcome[case_id]
        if behavior in ("FAILED", "missing"):
            r = results.get(case_id, {})
            detail = f"close: {r.get('behaviorClose', '-')}, code {r.get('remoteCloseCode')}" if r else "no result"
            ET.SubElement(case, "failure", message=f"{behavior} ({detail})")
        elif behavior == "UNIMPLEMENTED":
            ET.SubElement(case, "skipped", message="UNIMPLEMENTED")
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    markdown = "--markdown" in sys.argv[1:]
    junit = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--junit=")), None)
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    report_dir, agent, expected_file = Path(args[0]), args[1], Path(args[2])
    expected = [line.strip() for line in expected_file.read_text().splitlines() if line.strip()]
    index_path = report_dir / "index.json"
    if not index_path.exists():
        print(f"autobahn: no report at {index_path}")
        if junit:
            write_junit(junit, agent, {case_id: "missing" for case_id in expected}, {})
        return 1
    index = json.loads(index_path.read_text())
    results = index.get(agent)
    if results is None:
        print(f"autobahn: agent {agent!r} is not in {index_path} (agents: {', '.join(index) or 'none'})")
        if junit:
            write_junit(junit, agent, {case_id: "missing" for case_id in expected}, {})
        return 1

    outcome = {}
    for case_id in expected:
        outcome[case_id] = results[case_id]["behavior"] if case_id in results else "missing"
    unexpected = sorted(set(results) - set(expected), key=case_key)
    if junit:
        write_junit(junit, agent, outcome, results)

    by_group = OrderedDict()
    for case_id in sorted(expected, key=case_key):
        group = case_id.split(".")[0]
        by_group.setdefault(group, Counter())[outcome[case_id]] += 1
    totals = Counter(outcome.values())

    columns = [o for o in OUTCOMES if o in ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED") or totals[o]]
    if markdown:
        print("| Cases | Group | " + " | ".join(columns) + " |")
        print("|---|---|" + "---:|" * len(columns))
        for group, counts in by_group.items():
            cells = " | ".join(str(counts[c]) for c in columns)
            print(f"| {group}.* | {GROUPS.get(group, '')} | {cells} |")
        print(f"| **all** | **{len(expected)} cases** | " + " | ".join(f"**{totals[c]}**" for c in columns) + " |")
    else:
        width = max(len(v) for v in GROUPS.values())
        header = f"{'cases':<6} {'group':<{width}} " + " ".join(f"{c:>13}" for c in columns)
        print(header)
        print("-" * len(header))
        for group, counts in by_group.items():
            print(f"{group + '.*':<6} {GROUPS.get(group, ''):<{width}} " + " ".join(f"{counts[c]:>13}" for c in columns))
        print("-" * len(header))
        print(f"{'all':<6} {str(len(expected)) + ' cases':<{width}} " + " ".join(f"{totals[c]:>13}" for c in columns))

    notable = [c for c in sorted(expected, key=case_key) if outcome[c] != "OK"]
    if notable:
        print()
        for case_id in notable:
            r = results.get(case_id, {})
            close = r.get("behaviorClose", "-")
            code = r.get("remoteCloseCode")
            print(f"  {case_id:<8} {outcome[case_id]:<13} close: {close} (code {code})")
    if unexpected:
        print(f"\n  results for cases not asked for (ignored): {', '.join(unexpected)}")

    failed = totals["FAILED"] + totals["missing"]
    verdict = "FAILED" if failed else "passed"
    print(
        f"\nautobahn {agent}: {verdict}: {totals['OK']} OK, {totals['NON-STRICT']} NON-STRICT, "
        f"{totals['INFORMATIONAL']} INFORMATIONAL, {totals['UNIMPLEMENTED']} UNIMPLEMENTED, "
        f"{totals['FAILED']} FAILED, {totals['missing']} missing, of {len(expected)}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
