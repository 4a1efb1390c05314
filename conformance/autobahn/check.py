#!/usr/bin/env python3
"""Check an Autobahn (kosoku) report against expectations.json.

    check.py --role server --report reports/servers [--include '1.*' ...]

Prints the number of cases per `behavior` and per `behaviorClose`, then
compares every case id in expectations.json for the role with the report.
Exits 1 when a case is below the bar (behavior or behaviorClose other than OK
or INFORMATIONAL), is missing from the report, differs from its expectation,
or is in the report but unknown to the expectations file. Exits 2 when the
expectations file itself is malformed. Standard library only.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
BAR = ("OK", "INFORMATIONAL")
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED")
CLOSE_BEHAVIORS = ("OK", "INFORMATIONAL", "FAILED", "FAILED BY CLIENT", "WRONG CODE", "UNCLEAN")
ROLES = ("server", "client")
MAX_DETAILS = 40


def sort_key(case_id: str) -> list[int]:
    try:
        return [int(p) for p in case_id.split(".")]
    except ValueError:
        return [1 << 30]


def load_expectations(path: Path, role: str) -> dict[str, dict]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"check.py: cannot read {path}: {e}")
    problems = []
    for r in ROLES:
        if r not in doc or not isinstance(doc[r], dict) or not doc[r]:
            problems.append(f"role {r!r} missing or empty")
            continue
        for case_id, entry in doc[r].items():
            b, c = entry.get("behavior"), entry.get("behaviorClose")
            if b not in BAR or c not in BAR:
                problems.append(
                    f"{r} {case_id}: expectation {b}/{c} is below the bar (must be OK or INFORMATIONAL)"
                )
            if (b, c) != ("OK", "OK") and not str(entry.get("reason", "")).strip():
                problems.append(f"{r} {case_id}: {b}/{c} without a written reason")
    if set(doc.get("server", {})) != set(doc.get("client", {})):
        problems.append("server and client roles list different case ids")
    if problems:
        for p in problems:
            print(f"expectations: {p}", file=sys.stderr)
        print(f"check.py: {path} is malformed ({len(problems)} problem(s))", file=sys.stderr)
        sys.exit(2)
    return doc[role]


def load_report(report: Path, agent: str | None) -> tuple[str, dict[str, dict], Path]:
    index = report / "index.json" if report.is_dir() else report
    try:
        doc = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        print(f"check.py: cannot read report index {index}: {e}", file=sys.stderr)
        sys.exit(1)
    if not doc:
        print(f"check.py: {index} holds no results", file=sys.stderr)
        sys.exit(1)
    if agent is None:
        if len(doc) != 1:
            print(
                f"check.py: {index} has several agents ({', '.join(doc)}); pass --agent",
                file=sys.stderr,
            )
            sys.exit(1)
        agent = next(iter(doc))
    if agent not in doc:
        print(f"check.py: agent {agent!r} not in {index} (has: {', '.join(doc)})", file=sys.stderr)
        sys.exit(1)
    return agent, doc[agent], index.parent


def load_reports(reports: list[Path], agent: str | None) -> tuple[list[str], dict[str, dict]]:
    """Merge the reports of a run split in parts; each entry remembers its dir."""
    agents: list[str] = []
    merged: dict[str, dict] = {}
    for report in reports:
        name, results, report_dir = load_report(report, agent)
        if name not in agents:
            agents.append(name)
        for case_id, entry in results.items():
            if case_id in merged:
                print(f"check.py: case {case_id} is in more than one report", file=sys.stderr)
                sys.exit(1)
            merged[case_id] = dict(entry, _dir=report_dir)
    return agents, merged


def case_detail(entry: dict) -> str:
    """The report's own explanation of a verdict, from the per-case file."""
    try:
        case = json.loads((entry["_dir"] / entry["reportfile"]).read_text())
    except (OSError, ValueError, KeyError):
        return ""
    parts = []
    if case.get("behavior") != "OK" and case.get("result"):
        parts.append(f"result: {one_line(case['result'])}")
    if case.get("behaviorClose") != "OK" and case.get("resultClose"):
        parts.append(f"close: {one_line(case['resultClose'])}")
    if case.get("description"):
        parts.append(f"case: {one_line(case['description'])}")
    return "; ".join(parts)


def one_line(text: str, limit: int = 140) -> str:
    text = " ".join(str(text).replace("<br>", " ").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def print_counts(title: str, counter: Counter, known: tuple[str, ...]) -> None:
    labels = list(known) + sorted(k for k in counter if k not in known)
    width = max(len(label) for label in labels)
    print(f"  {title}:")
    for label in labels:
        print(f"    {label:<{width}}  {counter.get(label, 0)}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Check a kosoku report against expectations.json")
    ap.add_argument("--role", required=True, choices=ROLES)
    ap.add_argument(
        "--report",
        required=True,
        type=Path,
        action="append",
        help="report dir or its index.json; repeat for a run split in parts",
    )
    ap.add_argument("--expectations", type=Path, default=HERE / "expectations.json")
    ap.add_argument("--agent", help="agent name in the index (default: the only one)")
    ap.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="check only these case ids (as kosoku -i); default: every case",
    )
    args = ap.parse_args()

    expected = load_expectations(args.expectations, args.role)
    agents, results = load_reports(args.report, args.agent)
    where = ", ".join(str(r) for r in args.report)

    def selected(case_id: str) -> bool:
        return not args.include or any(fnmatch.fnmatchcase(case_id, g) for g in args.include)

    wanted = sorted((c for c in expected if selected(c)), key=sort_key)
    if not wanted:
        print("check.py: the selection matches no case id", file=sys.stderr)
        return 1

    behaviors = Counter(r.get("behavior") for r in results.values())
    closes = Counter(r.get("behaviorClose") for r in results.values())
    print(f"autobahn {args.role}: agent {', '.join(map(repr, agents))}, {len(results)} case(s) in {where}")
    print_counts("behavior", behaviors, BEHAVIORS)
    print_counts("behaviorClose", closes, CLOSE_BEHAVIORS)

    below, missing, differ = [], [], []
    for case_id in wanted:
        got = results.get(case_id)
        if got is None:
            missing.append(case_id)
            continue
        b, c = got.get("behavior"), got.get("behaviorClose")
        exp = expected[case_id]
        line = (
            f"{case_id}: got {b}/{c} (remote close code {got.get('remoteCloseCode')}), "
            f"expected {exp['behavior']}/{exp['behaviorClose']}"
        )
        if b not in BAR or c not in BAR:
            below.append((line, got))
        elif (b, c) != (exp["behavior"], exp["behaviorClose"]):
            differ.append((line, got))
    unknown = sorted((c for c in results if c not in expected), key=sort_key)

    if below:
        print(f"  BELOW THE BAR ({len(below)}):")
        for line, got in below[:MAX_DETAILS]:
            detail = case_detail(got)
            print(f"    {line}" + (f"\n      {detail}" if detail else ""))
        if len(below) > MAX_DETAILS:
            print(f"    ... and {len(below) - MAX_DETAILS} more (see index.html in {where})")
    if differ:
        print(f"  DIFFERENT FROM expectations.json ({len(differ)}; update the file with a reason if intended):")
        for line, _ in differ[:MAX_DETAILS]:
            print(f"    {line}")
        if len(differ) > MAX_DETAILS:
            print(f"    ... and {len(differ) - MAX_DETAILS} more")
    if missing:
        shown = " ".join(missing[:MAX_DETAILS]) + (" ..." if len(missing) > MAX_DETAILS else "")
        print(f"  MISSING FROM THE RUN ({len(missing)}): {shown}")
    if unknown:
        print(f"  NOT IN expectations.json ({len(unknown)}): {' '.join(unknown[:MAX_DETAILS])}")

    bad = len(below) + len(missing) + len(differ) + len(unknown)
    ok = len(wanted) - len(below) - len(missing) - len(differ)
    print(
        f"autobahn {args.role}: {ok} of {len(wanted)} case(s) as expected; "
        f"{len(below)} below the bar, {len(differ)} different, {len(missing)} missing, "
        f"{len(unknown)} unknown"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
