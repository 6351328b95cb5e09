#!/usr/bin/env python3
"""The end of every scripts/test run, failing or not: a table of its steps, then one line

    summary: N passed, M failed, K skipped

    summary.py --records DIR --planned "NAME:KIND ..." [--run-id ID] [--elapsed SECONDS]

It counts test cases from the runners' own results, never from their printed text: the JUnit XML that pytest,
XCTest (`swift test --xunit-output`) and scripts/autobahn (one case per Autobahn case) write. A step's record
(scripts/lib/run_step.py) says how it ended and where its XML is. The rules:
  - a tests step counts its XML's cases (failure or error: failed; skipped: skipped; else passed). If the step
    failed or timed out and its XML has no failed case (it crashed, hung, collected nothing, or its own set-up
    failed), that adds 1 failed; a step that says ok but wrote no XML is 1 failed too (it ran nothing we can see);
  - a check step (a script that is one test: the soak, the README check, ...) is 1 passed or 1 failed;
  - a setup step (installs, builds) counts only when it fails: 1 failed;
  - a planned step with no record did not run (after a failed build): listed, not counted; one that could not
    start because the run's time budget was spent is 1 failed;
  - with --run-id, any process still alive whose environment has WSBRIDGE_TEST_RUN=ID (everything the run
    started has it) is listed, killed and counted as 1 failed.
Exits 1 when anything failed, else 0.
"""

import argparse
import json
import os
import signal
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path


def junit_counts(path: str):
    """(passed, failed, skipped, names of failed cases) from a JUnit XML file; None when it is missing or bad."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    passed = failed = skipped = 0
    failures = []
    for case in root.iter("testcase"):
        tags = {child.tag for child in case}
        name = f"{case.get('classname', '')}.{case.get('name', '')}".strip(".")
        if tags & {"failure", "error"}:
            failed += 1
            failures.append(name)
        elif "skipped" in tags:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, failures


def ancestors() -> set:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
        except OSError:
            break
        pid = int(stat[stat.rfind(")") + 2 :].split()[1])
    return pids


def processes_of_run(run_id: str) -> list:
    mark = f"WSBRIDGE_TEST_RUN={run_id}".encode()
    mine = ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if mark not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = " ".join(a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a)
        except OSError:
            continue
        found.append((int(entry), argv[:160] or "?"))
    return found


def kill(pids: list) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", required=True)
    parser.add_argument("--planned", default="")
    parser.add_argument("--run-id")
    parser.add_argument("--elapsed", type=int)
    args = parser.parse_args()

    records = {}
    for path in sorted(Path(args.records).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        records[record["name"]] = record
    planned = [item.split(":", 1) for item in args.planned.split()]
    order = [name for name, _ in planned] + [name for name in records if name not in dict(planned)]
    kinds = dict(planned)

    passed = failed = skipped = 0
    rows, failed_cases = [], []
    for name in order:
        record = records.get(name)
        kind = record["kind"] if record else kinds.get(name, "?")
        if record is None:
            rows.append((name, kind, "not run", "", ""))
            continue
        status, seconds = record["status"], f"{record['seconds']:.0f} s"
        if status == "not-started":
            failed += 1
            rows.append((name, kind, "NOT STARTED (budget spent)", "", "1 failed"))
            failed_cases.append(f"{name}: not started, the run's time budget was spent")
            continue
        if status == "timeout":
            status = f"TIMED OUT after {record['timeout']:.0f} s"
        elif status == "failed":
            status = f"FAILED (exit {record['rc']})"
        if record.get("left_running"):
            status += f", left {len(record['left_running'])} running (killed)"
        ok = record["status"] == "ok"
        counts = ""
        if kind == "tests":
            result = junit_counts(record["junit"]) if record.get("junit") else None
            if result is None:
                failed += 1
                counts = "no results: 1 failed"
                failed_cases.append(f"{name}: wrote no test results")
            else:
                p, f, s, names = result
                extra = 0 if ok or f else 1
                passed, failed, skipped = passed + p, failed + f + extra, skipped + s
                counts = f"{p} passed, {f + extra} failed, {s} skipped"
                failed_cases += [f"{name}: {n}" for n in names]
                if extra:
                    failed_cases.append(f"{name}: the step failed ({status}) beyond its test cases")
        elif kind == "check":
            if ok:
                passed += 1
                counts = "1 passed"
            else:
                failed += 1
                counts = "1 failed"
                failed_cases.append(f"{name}: {status}")
        else:
            if not ok:
                failed += 1
                counts = "1 failed"
                failed_cases.append(f"{name}: {status}")
        rows.append((name, kind, status, seconds, counts))

    leftovers = processes_of_run(args.run_id) if args.run_id else []
    if leftovers:
        kill([pid for pid, _ in leftovers])
        failed += 1
        failed_cases.append(f"{len(leftovers)} process(es) of this run still alive at its end (killed now)")

    width = max([len(r[0]) for r in rows] + [4])
    swidth = max([len(r[2]) for r in rows] + [6])
    print()
    print(f"{'step':<{width}}  {'kind':<5}  {'status':<{swidth}}  {'time':>6}  tests")
    print("-" * (width + swidth + 40))
    for name, kind, status, seconds, counts in rows:
        print(f"{name:<{width}}  {kind:<5}  {status:<{swidth}}  {seconds:>6}  {counts}")
    if leftovers:
        print("\nstill alive at the end of the run (killed now):")
        for pid, argv in leftovers:
            print(f"  {pid} {argv}")
    if failed_cases:
        print("\nfailed:")
        for line in failed_cases[:60]:
            print(f"  {line}")
        if len(failed_cases) > 60:
            print(f"  ... and {len(failed_cases) - 60} more")
    if args.elapsed is not None:
        print(f"\nrun time: {args.elapsed // 60} min {args.elapsed % 60} s")
    print(f"summary: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
