"""The kill cases of the fault-injection suite (tests/faults/test_faults.py): (group, stage, point) each.

`point` is a `codemill.faults` constant, qualified with `@stage` for the generic points of `run_stage`. Every
registered point must be killed at by at least one case (tests/faults/test_registry.py checks it), and the table
of docs/lake.md lists exactly these cases.
"""

from __future__ import annotations

from codemill import faults as F

CURATION = [
    ("curation", "ingest", F.INGEST_FILES),
    ("curation", "ingest", f"{F.STAGE_OUTPUTS}@ingest"),
    ("curation", "ingest", f"{F.STAGE_COMMITTED}@ingest"),
    ("curation", "licences", F.LICENSED),
    ("curation", "licences", f"{F.STAGE_OUTPUTS}@licences"),
    ("curation", "filter", f"{F.STAGE_BEGUN}@filter"),
    ("curation", "filter", F.FILTER_FILTERED),
    ("curation", "filter", F.FILTER_REJECTED),
    ("curation", "filter", f"{F.STAGE_OUTPUTS}@filter"),
    ("curation", "exact_dedup", F.EXACT_DEDUPED),
    ("curation", "exact_dedup", f"{F.STAGE_OUTPUTS}@exact_dedup"),
    ("curation", "exact_dedup", f"{F.STAGE_STATS}@exact_dedup"),
    ("curation", "near_dedup", F.NEAR_KEPT),
    ("curation", "near_dedup", F.NEAR_CLUSTERS),
    ("curation", "near_dedup", f"{F.STAGE_OUTPUTS}@near_dedup"),
    ("curation", "redact", F.REDACTED),
    ("curation", "redact", F.REDACTIONS),
    ("curation", "redact", f"{F.STAGE_OUTPUTS}@redact"),
    ("curation", "decontaminate", F.DECONTAMINATION),
    ("curation", "decontaminate", f"{F.STAGE_OUTPUTS}@decontaminate"),
    ("curation", "documents", f"{F.STAGE_OUTPUTS}@documents"),
    ("curation", "outcomes", f"{F.STAGE_OUTPUTS}@outcomes"),
    ("curation", "outcomes", f"{F.STAGE_STATS}@outcomes"),
]
# near dedup's incremental path on the distributed clustering path (the full path above runs the one-task one)
INCREMENTAL = [
    ("incremental", "near_dedup", F.NEAR_INC_CLUSTERS),
    ("incremental", "near_dedup", F.NEAR_INC_KEPT),
    ("incremental", "near_dedup", f"{F.STAGE_OUTPUTS}@near_dedup"),
]
TOKENIZE = [
    ("tokenize", "tokenize", F.TOKENIZE_SHARD_FILES),
    ("tokenize", "tokenize", F.TOKENIZE_MANIFEST),
    ("tokenize", "tokenize", f"{F.TOKENIZE_PHASE}#2"),
    ("tokenize", "tokenize", f"{F.STAGE_OUTPUTS}@tokenize"),
]
SYNTH = [
    ("synth", "synth", f"{F.SYNTH_GENERATED}#2"),
    ("synth", "synth", f"{F.SYNTH_CHUNK}#1"),
    ("synth", "synth", f"{F.STAGE_OUTPUTS}@synth"),
]
# scoring killed mid-stage (its record written, the Spark scoring job not committed) and after its output
SCORE = [
    ("score", "score", f"{F.STAGE_BEGUN}@score"),
    ("score", "score", f"{F.STAGE_OUTPUTS}@score"),
]
CASES = CURATION + INCREMENTAL + SCORE + TOKENIZE + SYNTH
GROUPS = ["curation", "incremental", "score", "tokenize", "synth"]
Case = tuple[str, str, str]
# The case whose killed pipeline runs with a Spark JVM of its own, killed with it (the others attach to the suite's
# warm JVM: tests/faults/child.py), so both kinds of kill are in every CI run: ingest creating the lake's first tables.
OWN_JVM = {CURATION[0]}


def case_id(case: Case) -> str:
    return f"{case[0]}-{case[2]}".replace(":", "_").replace("@", "_at_").replace("#", "_n")
