#!/usr/bin/env python3
"""Compares an Autobahn|Testsuite fuzzingclient report with the checked-in expectations.

Usage: compare.py INDEX_JSON EXPECTED_JSON [MARKDOWN_OUT]

Fails (exit 1) when a case is FAILED, when a case's result is not one the expectations allow
for it (OK is always allowed: a case that got better never fails the run), or when a
section ran fewer cases than expected (a section silently skipped proves nothing). Prints
the result table per section, and writes it as Markdown when asked (docs/PROTOCOL.md keeps
a copy).
"""
import json
import sys
from collections import OrderedDict

# The result columns, best first.
COLUMNS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def section(case_id):
    return case_id.split(".")[0]


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def allowed_for(case_id, expected):
    """The results allowed for a case: its own entry, else its section's."""
    entry = expected["cases"].get(case_id)
    if entry is not None:
        return set(entry["allow"])
    return set(expected["sections"][section(case_id)]["allow"])


def main():
    index_path, expected_path = sys.argv[1], sys.argv[2]
    markdown_path = sys.argv[3] if len(sys.argv) > 3 else None
    with open(index_path) as f:
        report = json.load(f)
    with open(expected_path) as f:
        expected = json.load(f)
    if len(report) != 1:
        print("expected one agent in the report, found %s" % sorted(report))
        return 1
    (agent, cases), = report.items()

    table = OrderedDict()
    problems = []
    for case_id in sorted(cases, key=case_key):
        result = cases[case_id]
        behavior = result["behavior"]
        close = result["behaviorClose"]
        sec = section(case_id)
        if sec not in expected["sections"]:
            problems.append("%s: section %s has no expectations" % (case_id, sec))
            continue
        row = table.setdefault(sec, OrderedDict((c, 0) for c in COLUMNS))
        column = behavior if behavior in COLUMNS else "FAILED"
        row[column] += 1
        allowed = allowed_for(case_id, expected) | {"OK"}
        if behavior not in allowed:
            problems.append(
                "%s: %s (close: %s, remote code %s), expected %s"
                % (case_id, behavior, close, result["remoteCloseCode"], "/".join(sorted(allowed)))
            )
        elif close not in ("OK", "INFORMATIONAL") and behavior != "UNIMPLEMENTED":
            problems.append("%s: close handshake %s" % (case_id, close))

    for sec, spec in expected["sections"].items():
        ran = sum(table.get(sec, {}).values())
        if ran < spec["cases"]:
            problems.append("section %s: %d cases ran, %d expected" % (sec, ran, spec["cases"]))

    header = "| section | cases | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|---" * (len(COLUMNS) + 2) + "|"]
    totals = OrderedDict((c, 0) for c in COLUMNS)
    for sec in sorted(table, key=int):
        row = table[sec]
        name = expected["sections"][sec].get("name", "")
        label = "%s %s" % (sec, name) if name else sec
        lines.append(
            "| %s | %d | %s |"
            % (label, sum(row.values()), " | ".join(str(row[c]) for c in COLUMNS))
        )
        for c in COLUMNS:
            totals[c] += row[c]
    lines.append(
        "| all | %d | %s |"
        % (sum(totals.values()), " | ".join(str(totals[c]) for c in COLUMNS))
    )
    print("Autobahn|Testsuite results for %s:" % agent)
    print("\n".join(lines))
    if markdown_path:
        with open(markdown_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    if problems:
        print("\n%d case(s) worse than expected:" % len(problems))
        for problem in problems:
            print("  " + problem)
        return 1
    print("\nevery case as expected or better")
    return 0


if __name__ == "__main__":
    sys.exit(main())
