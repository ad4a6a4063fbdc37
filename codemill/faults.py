"""Kill points: the named places between two commits where the fault-injection suite SIGKILLs a job.

    CODEMILL_KILL_AT=filter:filtered python -m spark_jobs.pipeline --stages filter --lake lake   # dies there
    CODEMILL_KILL_AT=stage:outputs@near_dedup ...        # a generic point, only in the named stage
    CODEMILL_KILL_AT=synth:chunk_committed#2 ...         # the second time the point is reached

`point(NAME)` is inert unless the environment variable `CODEMILL_KILL_AT` names that point; then the process kills
itself with SIGKILL, as a preempted executor or an out-of-memory driver dies: no `finally`, no `atexit`, no flush.
Every point is a constant registered in `POINTS` (one place): `tests/faults/test_registry.py` compares the registry
with the `faults.point(...)` calls in the code and with the points the suite (tests/faults) kills at, so a new
commit point cannot be added without a test that kills the job there.
"""

from __future__ import annotations

import os
import signal

ENV = "CODEMILL_KILL_AT"

# Generic points of every pipeline stage (spark_jobs/pipeline.py `run_stage`), qualified by the stage's name.
STAGE_BEGUN = "stage:begun"            # the stage's pending record is written, no output yet
STAGE_OUTPUTS = "stage:outputs"        # every output table committed, stage_stats not yet
STAGE_STATS = "stage:stats"            # stage_stats appended, the stage's commit record not yet
STAGE_COMMITTED = "stage:committed"    # the stage is committed, the next stage not started
# Between two output commits of one stage.
INGEST_FILES = "ingest:files"
LICENSED = "licences:licensed"
FILTER_FILTERED = "filter:filtered"
FILTER_REJECTED = "filter:rejected"
EXACT_DEDUPED = "exact_dedup:exact_deduped"
NEAR_KEPT = "near_dedup:near_deduped"
NEAR_CLUSTERS = "near_dedup:near_dup_clusters"
NEAR_INC_CLUSTERS = "near_dedup:incremental:near_dup_clusters"
NEAR_INC_KEPT = "near_dedup:incremental:near_deduped"
REDACTED = "redact:redacted"
REDACTIONS = "redact:redactions"
DECONTAMINATION = "decontaminate:contamination"
SYNTH_GENERATED = "synth:chunk_generated"      # a chunk generated, its append not committed (mid-chunk)
SYNTH_CHUNK = "synth:chunk_committed"          # a chunk's append committed, the next chunk not started
TOKENIZE_SHARD_FILES = "tokenize:shard_files"  # a phase's shard files written, its manifest not yet
TOKENIZE_MANIFEST = "tokenize:manifest"        # a phase's manifest written, its `shards` rows not yet
TOKENIZE_PHASE = "tokenize:phase"              # a phase's `shards` rows committed, the next phase not started

POINTS: tuple[str, ...] = (
    STAGE_BEGUN, STAGE_OUTPUTS, STAGE_STATS, STAGE_COMMITTED, INGEST_FILES, LICENSED, FILTER_FILTERED,
    FILTER_REJECTED, EXACT_DEDUPED, NEAR_KEPT, NEAR_CLUSTERS, NEAR_INC_CLUSTERS, NEAR_INC_KEPT, REDACTED, REDACTIONS,
    DECONTAMINATION, SYNTH_GENERATED, SYNTH_CHUNK, TOKENIZE_SHARD_FILES, TOKENIZE_MANIFEST, TOKENIZE_PHASE,
)

_reached: dict[str, int] = {}


def point(name: str, *, where: str = "") -> None:
    """Kills this process with SIGKILL when `CODEMILL_KILL_AT` is `name`, `name@where`, or either with `#n` and
    this is the n-th time the point is reached; otherwise does nothing."""
    if name not in POINTS:
        raise ValueError(f"unknown kill point {name!r}: register it in codemill/faults.py POINTS")
    target = os.environ.get(ENV)
    if not target:
        return
    wanted, _, nth = target.partition("#")
    if wanted not in (name, f"{name}@{where}"):
        return
    _reached[wanted] = _reached.get(wanted, 0) + 1
    if _reached[wanted] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
