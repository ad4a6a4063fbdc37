"""The table of faults survived in docs/lake.md, written by the suite (tests/faults/test_faults.py) between the
`faults-table` markers and checked by tests/faults/test_registry.py.

The suite rewrites the rows of the cases it ran and keeps the verdicts of the others (a `-k` selection updates
its rows only); a case that never ran reads `not run`.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.cases import OWN_JVM

DOC = Path(__file__).resolve().parents[2] / "docs" / "lake.md"
START = "<!-- faults-table:start (written by tests/faults/test_faults.py; do not edit) -->"
END = "<!-- faults-table:end -->"
HEADER = ["| group | stage | killed at | killed process | recovered identically |", "|---|---|---|---|---|"]
# The killed child's Spark JVM: its own, killed with it, or the suite's warm one (tests/faults/child.py).
JVM = {True: "driver and its JVM", False: "driver (suite's JVM)"}
VERDICTS = ("yes", "no", "not run")
Case = tuple[str, str, str]


def render(verdicts: dict[Case, str]) -> list[str]:
    return HEADER + [f"| {g} | {s} | `{p}` | {JVM[(g, s, p) in OWN_JVM]} | {v} |"
                     for (g, s, p), v in verdicts.items()]


def read_table() -> dict[Case, str]:
    """The table's rows: case -> verdict."""
    text = DOC.read_text()
    if START not in text or END not in text:
        return {}
    rows = {}
    for line in text.split(START, 1)[1].split(END, 1)[0].strip().splitlines()[len(HEADER):]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        g, s, p, v = cells[0], cells[1], cells[2], cells[-1]
        rows[(g, s, p.strip("`"))] = v
    return rows


def write_table(cases: list[Case], results: dict[Case, bool]) -> None:
    """Rewrites the table for `cases`: the verdicts of `results`, the earlier ones for the other cases."""
    old = read_table()
    verdicts = {c: ("yes" if results[c] else "no") if c in results else old.get(c, "not run") for c in cases}
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + START + "\n" + "\n".join(render(verdicts)) + "\n" + END + tail)
