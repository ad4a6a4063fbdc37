"""Every kill point in the code is registered, every registered point is killed at by the fault suite, and the
table of docs/lake.md is the suite's current output (a fast test: no Spark)."""

from __future__ import annotations

import re
from pathlib import Path

from codemill import faults
from tests.faults.cases import CASES
from tests.faults.docs_table import VERDICTS, read_table

REPO = Path(__file__).resolve().parents[2]
CALL = re.compile(r"faults\.point\(\s*faults\.([A-Z_]+)")


def _calls() -> dict[str, list[str]]:
    """Registered point -> the files that call `faults.point` with it (grep of the packages)."""
    found: dict[str, list[str]] = {}
    for package in ("codemill", "spark_jobs", "synth", "trainer"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path == REPO / "codemill" / "faults.py":  # the registry itself
                continue
            text = path.read_text()
            names = CALL.findall(text)
            assert len(names) == text.count("faults.point("), \
                f"{path}: call faults.point with a constant of codemill/faults.py, not a literal"
            for name in names:
                found.setdefault(getattr(faults, name), []).append(str(path.relative_to(REPO)))
    return found


def test_every_kill_point_in_the_code_is_registered_and_vice_versa():
    assert set(_calls()) == set(faults.POINTS)
    assert len(set(faults.POINTS)) == len(faults.POINTS)


def test_every_registered_point_is_killed_at_by_the_suite():
    covered = {p.split("@")[0].split("#")[0] for _, _, p in CASES}
    assert set(faults.POINTS) - covered == set(), "add a case to tests/faults/cases.py for each new kill point"
    assert covered <= set(faults.POINTS)


def test_the_docs_table_is_the_suites_output():
    """docs/lake.md lists exactly the suite's cases, in order, none of them failed: run `make test-faults` after
    changing tests/faults/cases.py (it rewrites the table)."""
    table = read_table()
    assert list(table) == CASES, "docs/lake.md's faults table is stale: run make test-faults"
    assert set(table.values()) <= set(VERDICTS)
    assert [c for c, v in table.items() if v == "no"] == []


def test_a_point_kills_only_when_named(monkeypatch):
    killed = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setattr(faults, "_reached", {})
    faults.point(faults.FILTER_FILTERED)
    monkeypatch.setenv(faults.ENV, f"{faults.STAGE_OUTPUTS}@filter#2")
    faults.point(faults.STAGE_OUTPUTS, where="ingest")
    faults.point(faults.STAGE_OUTPUTS, where="filter")
    assert killed == []
    faults.point(faults.STAGE_OUTPUTS, where="filter")
    assert killed == [faults.signal.SIGKILL]
    import pytest

    with pytest.raises(ValueError, match="register it"):
        faults.point("filter:somewhere")
