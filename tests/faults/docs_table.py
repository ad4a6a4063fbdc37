"""The table of faults survived in docs/lake.md, written by the suite (tests/faults/test_faults.py) between the
`faults-table` markers and checked by tests/faults/test_registry.py.

The suite rewrites the rows of the cases it ran and keeps the verdicts of the others (a `-k` selection updates
its rows only); a case that never ran reads `not run`. Its `re-run` column says how the case last ran: `in a chain`
(CI: its killed run was the re-run of the case before it, and its own re-run the next case's killed run) or `alone`
(`make test-faults`: on a copy of the reference's lake before its stage).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.faults.cases import OWN_JVM

DOC = Path(__file__).resolve().parents[2] / "docs" / "lake.md"
START = "<!-- faults-table:start (written by tests/faults/test_faults.py; do not edit) -->"
END = "<!-- faults-table:end -->"
HEADER = ["| group | stage | killed at | killed process | re-run | recovered identically |",
          "|---|---|---|---|---|---|"]
# The killed child's Spark JVM: its own, killed with it, or the suite's warm one (tests/faults/child.py).
JVM = {True: "driver and its JVM", False: "driver (suite's JVM)"}
VERDICTS = ("yes", "no", "not run")
HOW = {"chain": "in a chain", "alone": "alone", "": ""}
Case = tuple[str, str, str]


def render(verdicts: dict[Case, str], how: dict[Case, str]) -> list[str]:
    return HEADER + [f"| {g} | {s} | `{p}` | {JVM[(g, s, p) in OWN_JVM]} | {how[(g, s, p)]} | {v} |"
                     for (g, s, p), v in verdicts.items()]


def read_table(*, column: int = -1) -> dict[Case, str]:
    """The table's rows: case -> verdict (or another column's cell)."""
    text = DOC.read_text()
    if START not in text or END not in text:
        return {}
    rows = {}
    for line in text.split(START, 1)[1].split(END, 1)[0].strip().splitlines()[len(HEADER):]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        g, s, p, v = cells[0], cells[1], cells[2], cells[column]
        rows[(g, s, p.strip("`"))] = v
    return rows


def write_table(cases: list[Case], results: dict[Case, bool], how: dict[Case, str]) -> None:
    """Rewrites the table for `cases`: the verdicts of `results` (run `how`), the earlier ones for the others."""
    old, old_how = read_table(), read_table(column=-2)
    verdicts = {c: ("yes" if results[c] else "no") if c in results else old.get(c, "not run") for c in cases}
    hows = {c: HOW[how[c]] if c in results else old_how.get(c, "") for c in cases}
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    # Replaced in one rename: test_registry.py may read the table at the same time (another xdist worker).
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(head + START + "\n" + "\n".join(render(verdicts, hows)) + "\n" + END + tail)
    os.replace(tmp, DOC)
