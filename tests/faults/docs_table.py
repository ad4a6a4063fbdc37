"""The table of faults survived in docs/lake.md, written by the suite (tests/faults/test_faults.py) between the
`faults-table` markers and checked by tests/faults/test_registry.py.

The suite rewrites the rows of the cases it ran and keeps the verdicts of the others (a `-k` selection updates
its rows only); a case that never ran reads `not run`.
"""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "lake.md"
START = "<!-- faults-table:start (written by tests/faults/test_faults.py; do not edit) -->"
END = "<!-- faults-table:end -->"
HEADER = ["| group | stage | killed at | recovered identically |", "|---|---|---|---|"]
VERDICTS = ("yes", "no", "not run")
Case = tuple[str, str, str]


def render(verdicts: dict[Case, str]) -> list[str]:
    return HEADER + [f"| {g} | {s} | `{p}` | {v} |" for (g, s, p), v in verdicts.items()]


def read_table() -> dict[Case, str]:
    """The table's rows: case -> verdict."""
    text = DOC.read_text()
    if START not in text or END not in text:
        return {}
    rows = {}
    for line in text.split(START, 1)[1].split(END, 1)[0].strip().splitlines()[len(HEADER):]:
        g, s, p, v = (cell.strip() for cell in line.strip().strip("|").split("|"))
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
