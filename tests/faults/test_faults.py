"""The fault-injection suite (`pytest -m faults`, `make test-faults`): every stage killed with SIGKILL at every commit
point (`codemill.faults`), then re-run; the tables must equal those of an uninterrupted run row for row.

Lean by design (CI budget): one small corpus per group, an uninterrupted reference run computed once per group in
this process's Spark session with a copy of the lake before and after each stage; per case, the stage runs in a
child `python -m spark_jobs.pipeline` on a copy of the lake before it, with `CODEMILL_KILL_AT` naming the point, so
it SIGKILLs itself there; then the stage is re-run here, and the lake must hold the reference's tables
(`codemill.lake.table_digests`, as `python -m codemill.lake --digest true` prints them), account for every input
record once (`outcomes`), and keep no file that no table references once vacuumed. The suite writes the verdicts of the
cases it ran into the table of docs/lake.md (between its `faults-table` markers); tests/faults/test_registry.py checks
that table and that every kill point in the code has a case here. The trainer's kill mid-phase and resume is
tests/trainer/test_resume.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codemill import faults
from codemill.lake import Lake, table_digests
from spark_jobs import accounting, pipeline
from tests.codemill.test_lake import data_files, live_files
from tests.faults.cases import CASES, CURATION, INCREMENTAL, OWN_JVM, SCORE, SYNTH, TOKENIZE, case_id
from tests.faults.docs_table import write_table

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# Columns that differ between two runs by design: run ids, and the absolute paths of the shard folders.
IGNORE = ["run_id", "ingest_run", "path"]
RESULTS: dict[tuple[str, str, str], bool] = {}
STARTED = time.perf_counter()


@pytest.fixture(scope="module", autouse=True)
def faults_table():
    """Writes the verdicts of the cases that ran into the docs/lake.md table (the others keep theirs)."""
    yield
    if RESULTS:
        write_table(CASES, RESULTS)
    print(f"\n[faults] {len(RESULTS)} cases in {time.perf_counter() - STARTED:.0f} s", flush=True)


# ---------------------------------------------------------------------- helpers
def _copy(src: Path | None, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    if src is not None and src.exists():
        shutil.copytree(src, dst)
    return dst


def _run_killed(spark, args: list[str], point: str, log: Path, *, own_jvm: bool) -> int:
    """The pipeline on ARGS in a child process with `CODEMILL_KILL_AT=point`; returns its exit status. The child
    attaches to this process's warm JVM (tests/faults/child.py says why that is a faithful kill), or with
    `own_jvm` starts its own (`python -m spark_jobs.pipeline`), which is killed with it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), faults.ENV: point, "CODEMILL_SPARK_DRIVER_MEMORY": "1g"}
    if own_jvm:
        env.pop("PYSPARK_GATEWAY_PORT", None)
        env.pop("PYSPARK_GATEWAY_SECRET", None)
        module = "spark_jobs.pipeline"
    else:
        gateway = spark.sparkContext._gateway.gateway_parameters
        env.update(PYSPARK_GATEWAY_PORT=str(gateway.port), PYSPARK_GATEWAY_SECRET=gateway.auth_token)
        module = "tests.faults.child"
    with log.open("wb") as out:
        # Its own process group: the kill is the child's own; whatever it leaves (its JVM) is ended below.
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                                start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=900)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return proc.returncode


def _orphans(lake_dir: Path, before: Path | None, spark) -> dict[str, set[str]]:
    """Vacuums every table the killed and re-run stage wrote files into (its folder differs from the lake before
    the stage; the others are untouched copies) and returns the Parquet files still in its folder that it does not
    reference."""
    lake = Lake(spark, str(lake_dir))
    out = {}
    for t in lake.tables():
        if before is not None and _listing(lake_dir / t.name) == _listing(before / t.name):
            continue
        lake.vacuum(t.name)
        extra = data_files(lake, t.name) - live_files(lake, t.name)
        if extra:
            out[t.name] = extra
    return out


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def _shard_files(root: Path) -> dict[str, int]:
    """Every file of a shards root but the manifests (which name absolute paths), with its size."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json" and "tokenizer" not in p.parts}


def _check_case(spark, case, *, args: list[str], before: Path | None, after: Path, work: Path,
                shards: tuple[Path, Path] | None = None) -> None:
    """Kill at the case's point on a copy of `before`, re-run, compare with `after` (and the shard files the
    case writes, `shards[0]`, with the reference's, `shards[1]`); records the verdict."""
    group, stage, point = case
    RESULTS.pop(case, None)  # a verdict only from a check: a harness failure (an OOM-killed JVM) leaves none
    lake_dir = _copy(before, work / "lake")
    log = work / "killed.log"
    t0 = time.perf_counter()
    rc = _run_killed(spark, args + ["--stages", stage], point, log, own_jvm=case in OWN_JVM)
    t1 = time.perf_counter()
    assert rc == -signal.SIGKILL, f"the {stage} job was not killed at {point} (exit {rc}):\n" + \
        log.read_text(errors="replace")[-3000:]
    pipeline.main(args + ["--stages", stage])
    t2 = time.perf_counter()
    lake = Lake(spark, str(lake_dir))
    checks = {"tables equal the reference's": lambda: table_digests(str(lake_dir), ignore=IGNORE) == table_digests(
                  str(after), ignore=IGNORE),
              "no stage left pending": lambda: lake.pending_stages() == {},
              "outcomes account for every record once": lambda: _accounted(lake),
              "shard files equal the reference's": lambda: shards is None or _shard_files(shards[0]) == _shard_files(
                  shards[1]),
              "no unreferenced file after vacuum": lambda: _orphans(lake_dir, before, spark) == {}}
    for what, check in checks.items():
        ok = check()
        if not ok:
            RESULTS[case] = False
        assert ok, f"killed at {point}, re-run: not {what}"
    RESULTS[case] = True
    print(f"\n[faults] {case_id(case)}: killed child {t1 - t0:.1f} s, re-run {t2 - t1:.1f} s, checks "
          f"{time.perf_counter() - t2:.1f} s", flush=True)


def _accounted(lake: Lake) -> bool:
    if not lake.exists("outcomes"):
        return True
    summary = accounting.summarize(lake.read("outcomes"))
    return summary["records"] == lake.read("files").count() + lake.read("quarantine").count() and \
        summary["duplicate_doc_ids"] == 0


class _Reference:
    """A group's uninterrupted run: the lake copied before and after each stage."""

    def __init__(self, root: Path):
        self.root, self.before, self.after = root, {}, {}

    def run(self, args: list[str], stage: str, lake_dir: Path) -> None:
        self.before[stage] = _copy(lake_dir, self.root / f"before-{stage}") if lake_dir.exists() else None
        pipeline.main(args + ["--stages", stage])
        self.after[stage] = _copy(lake_dir, self.root / f"after-{stage}")


# ---------------------------------------------------------------------- curation
def _curation_args(repos: Path, lake_dir: Path) -> list[str]:
    return ["--input", str(repos), "--lake", str(lake_dir), "--ingest.max_bytes", "2000", "--near_dedup.num_perm",
            "64", "--documents.max_chars", "1000", "--print_funnel", "false"]


@pytest.fixture(scope="module")
def curation(spark, tmp_path_factory):
    from tests.fixtures.curation.build import TREE_OUTCOMES, make_tree

    root = tmp_path_factory.mktemp("faults-curation")
    repos = make_tree(root / "repos")
    ref = _Reference(root)
    lake_dir = root / "reference"
    for stage in pipeline.CURATION:
        ref.run(_curation_args(repos, lake_dir), stage, lake_dir)
    lake = Lake(spark, str(lake_dir))
    assert accounting.summarize(lake.read("outcomes"))["records"] == len(TREE_OUTCOMES)
    return repos, ref


@pytest.mark.parametrize("case", CURATION, ids=case_id)
def test_curation_stage_killed_and_rerun(spark, curation, case, tmp_path):
    repos, ref = curation
    stage = case[1]
    _check_case(spark, case, args=_curation_args(repos, tmp_path / "lake"), before=ref.before[stage],
                after=ref.after[stage], work=tmp_path)


@pytest.fixture(scope="module")
def incremental(spark, curation, tmp_path_factory):
    """A lake whose near dedup ran on part of exact_deduped, which then grew: the incremental run's input."""
    repos, ref = curation
    root = tmp_path_factory.mktemp("faults-incremental")
    lake_dir = _copy(ref.after["exact_dedup"], root / "reference")
    lake = Lake(spark, str(lake_dir))
    full = lake.read("exact_deduped").localCheckpoint()
    ids = sorted(r.doc_id for r in full.select("doc_id").collect())
    lake.overwrite("exact_deduped", full.where(~full.doc_id.isin(ids[::3])))
    pipeline.main(_curation_args(repos, lake_dir) + ["--stages", "near_dedup"])
    lake.overwrite("exact_deduped", full)
    args = _curation_args(repos, lake_dir) + ["--near_dedup.incremental", "true", "--near_dedup.local_max_edges",
                                              "0"]
    inc = _Reference(root)
    inc.run(args, "near_dedup", lake_dir)
    return repos, inc


@pytest.mark.parametrize("case", INCREMENTAL, ids=case_id)
def test_incremental_near_dedup_killed_and_rerun(spark, incremental, case, tmp_path):
    repos, ref = incremental
    args = _curation_args(repos, tmp_path / "lake") + ["--near_dedup.incremental", "true",
                                                       "--near_dedup.local_max_edges", "0"]
    _check_case(spark, case, args=args, before=ref.before["near_dedup"], after=ref.after["near_dedup"],
                work=tmp_path)


# ---------------------------------------------------------------------- score
@pytest.fixture(scope="module")
def score(spark, curation, tmp_path_factory):
    """The curation reference's clean table scored by a tiny exported annotator (tests/spark_jobs/test_annotate)."""
    from tests.spark_jobs.test_annotate import tiny_parts
    from trainer.annotator_model import export_annotator

    repos, ref = curation
    root = tmp_path_factory.mktemp("faults-score")
    export_annotator(root / "annotator", **tiny_parts())
    lake_dir = _copy(ref.after["outcomes"], root / "reference")
    ref_score = _Reference(root)
    ref_score.run(_score_args(lake_dir, root), "score", lake_dir)
    return root, ref_score


def _score_args(lake_dir: Path, root: Path) -> list[str]:
    return ["--lake", str(lake_dir), "--score.annotator", str(root / "annotator"), "--score.window", "64",
            "--print_funnel", "false"]


@pytest.mark.parametrize("case", SCORE, ids=case_id)
def test_scoring_killed_and_rerun(spark, score, case, tmp_path):
    root, ref = score
    _check_case(spark, case, args=_score_args(tmp_path / "lake", root), before=ref.before["score"],
                after=ref.after["score"], work=tmp_path)


# ---------------------------------------------------------------------- tokenize
def _tokenize_args(lake_dir: Path, shards: Path) -> list[str]:
    return ["--lake", str(lake_dir), "--tokenize", "conf/spark/tokenize.yaml", "--tokenize.shards_root", str(shards),
            "--tokenize.seq_len", "128", "--tokenize.num_shards", "2", "--tokenize.val_fraction", "0.15",
            "--tokenize.chunk_bytes", "8KB", "--tokenize.tokenizer.vocab_size", "600",
            "--tokenize.tokenizer.sample_docs", "100", "--print_funnel", "false"]


@pytest.fixture(scope="module")
def tokenize(spark, tmp_path_factory):
    from tests.spark_jobs.test_tokenize_shards import _make_lake

    root = tmp_path_factory.mktemp("faults-tokenize")
    lake_dir = root / "reference"
    _make_lake(spark, str(lake_dir))
    ref = _Reference(root)
    ref.run(_tokenize_args(lake_dir, root / "shards"), "tokenize", lake_dir)
    return root, ref


@pytest.mark.parametrize("case", TOKENIZE, ids=case_id)
def test_tokenize_killed_and_rerun(spark, tokenize, case, tmp_path):
    root, ref = tokenize
    shards = tmp_path / "shards"
    _check_case(spark, case, args=_tokenize_args(tmp_path / "lake", shards), before=ref.before["tokenize"],
                after=ref.after["tokenize"], work=tmp_path, shards=(shards, root / "shards"))


# ---------------------------------------------------------------------- synth
def _synth_args(lake_dir: Path) -> list[str]:
    return ["--lake", str(lake_dir), "--synth", "conf/synth/local.yaml", "--synth.chunk_size", "1",
            "--synth.sampling.max_new_tokens", "24", "--synth.sampling.temperature", "0.0",
            "--synth.filter.decontaminate.enabled", "false", "--print_funnel", "false"]


@pytest.fixture(scope="module")
def synth(spark, tmp_path_factory):
    from tests.synth.conftest import write_seeds

    root = tmp_path_factory.mktemp("faults-synth")
    lake_dir = root / "reference"
    write_seeds(Lake(spark, str(lake_dir)))
    ref = _Reference(root)
    ref.run(_synth_args(lake_dir), "synth", lake_dir)
    return ref


@pytest.mark.parametrize("case", SYNTH, ids=case_id)
def test_synth_killed_and_rerun(spark, synth, case, tmp_path):
    _check_case(spark, case, args=_synth_args(tmp_path / "lake"), before=synth.before["synth"],
                after=synth.after["synth"], work=tmp_path)
