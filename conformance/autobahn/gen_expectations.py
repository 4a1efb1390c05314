#!/usr/bin/env python3
"""Create or refresh conformance/autobahn/expectations.json.

The expectations file holds one entry per Autobahn case id for each role
(`server`: kosoku's fuzzingclient drives `duplex echo`; `client`: the
autobahn_client example is driven by kosoku's fuzzingserver). An entry is the
verdict we accept for that case: `behavior` and `behaviorClose`, each OK or
INFORMATIONAL, plus a written `reason` whenever either is not OK.

This script takes the list of case ids from the installed kosoku package (so
it must run with the Python that has kosoku, e.g. `.venv/bin/python`), keeps
every entry already in the file (and its reason), adds missing ids as OK and
drops ids kosoku no longer knows. The cases that Autobahn itself always grades
INFORMATIONAL are pre-filled with their reason below.

    .venv/bin/python conformance/autobahn/gen_expectations.py [--check]

`--check` writes nothing and exits 1 if the file is not up to date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "expectations.json"
ROLES = ("server", "client")

# Cases whose code sets behavior and behaviorClose to INFORMATIONAL whatever the
# peer does (see kosoku/cases/case7_1_6.py and case7_13_{1,2}.py).
ALWAYS_INFORMATIONAL = {
    "7.1.6": (
        "Autobahn always grades this case INFORMATIONAL: a 256 KiB message, a "
        "text message, a close and a ping are sent back to back, and whether the "
        "text message is echoed before the close is processed is left to the "
        "implementation."
    ),
    "7.13.1": (
        "Autobahn always grades this case INFORMATIONAL: it closes with code "
        "5000, which lies outside every range RFC 6455 section 7.4.2 defines "
        "(0-4999), so the spec leaves the reaction open."
    ),
    "7.13.2": (
        "Autobahn always grades this case INFORMATIONAL: it closes with code "
        "65535, which lies outside every range RFC 6455 section 7.4.2 defines "
        "(0-4999), so the spec leaves the reaction open."
    ),
}

HEADER = (
    "Accepted Autobahn verdict for every case, per role. The bar is OK or "
    "INFORMATIONAL for both behavior and behaviorClose; any entry not OK carries "
    "a reason. Checked by check.py, refreshed by gen_expectations.py."
)


def kosoku_case_ids() -> list[str]:
    try:
        from kosoku.cases import CASES  # type: ignore[import-not-found]
    except ImportError:
        sys.exit(
            "gen_expectations.py: kosoku is not importable; run it with "
            ".venv/bin/python (scripts/test.sh creates the venv)"
        )
    return list(CASES)


def default_entry(case_id: str) -> dict[str, str]:
    if case_id in ALWAYS_INFORMATIONAL:
        return {
            "behavior": "INFORMATIONAL",
            "behaviorClose": "INFORMATIONAL",
            "reason": ALWAYS_INFORMATIONAL[case_id],
        }
    return {"behavior": "OK", "behaviorClose": "OK"}


def sort_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


def render(doc: dict) -> str:
    """One case per line, so a change to one verdict is a one-line diff."""
    lines = ["{", f'  "_about": {json.dumps(doc["_about"])},']
    for r, role in enumerate(ROLES):
        lines.append(f'  "{role}": {{')
        cases = doc[role]
        ids = sorted(cases, key=sort_key)
        for i, case_id in enumerate(ids):
            comma = "," if i + 1 < len(ids) else ""
            entry = json.dumps(cases[case_id], ensure_ascii=False)
            lines.append(f"    {json.dumps(case_id)}: {entry}{comma}")
        lines.append("  }" + ("," if r + 1 < len(ROLES) else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ap.add_argument("--check", action="store_true", help="verify only, write nothing")
    args = ap.parse_args()

    ids = kosoku_case_ids()
    old: dict = {}
    if args.file.exists():
        old = json.loads(args.file.read_text())

    doc: dict = {"_about": HEADER}
    for role in ROLES:
        have = old.get(role, {})
        dropped = sorted(set(have) - set(ids), key=sort_key)
        if dropped:
            print(f"{role}: dropping ids kosoku does not know: {' '.join(dropped)}")
        doc[role] = {cid: have.get(cid, default_entry(cid)) for cid in ids}
        added = [cid for cid in ids if cid not in have]
        if added:
            print(f"{role}: adding {len(added)} case(s) as their default verdict")

    text = render(doc)
    current = args.file.read_text() if args.file.exists() else ""
    if args.check:
        if text != current:
            print(f"{args.file} is not up to date; run gen_expectations.py")
            return 1
        print(f"{args.file} is up to date ({len(ids)} cases per role)")
        return 0
    if text != current:
        args.file.write_text(text)
        print(f"wrote {args.file} ({len(ids)} cases per role)")
    else:
        print(f"{args.file} unchanged ({len(ids)} cases per role)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
