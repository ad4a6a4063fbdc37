"""The fault-injection suite: every stage killed with SIGKILL at every commit point (`codemill.faults`), then re-run;
the tables must equal those of an uninterrupted run row for row.

One small corpus per group (curation, near dedup's incremental path, scoring, tokenize, synth) and an uninterrupted
reference run computed once per group in this process's Spark session, with a copy of the lake before each stage
and its table digests after it. A killed run is a child `python -m spark_jobs.pipeline` (tests/faults/child.py)
with `CODEMILL_KILL_AT` naming the point, so it SIGKILLs itself there. Two ways to run the cases (`_run_chain`):
- `pytest -m faults` (in `make test`, so in CI): a group's cases in one chain on one lake; each killed run is the
  re-run of the kill before it; after a stage's last kill the stage runs here to its end and the lake must equal
  the reference after that stage; accounting, pending stages and vacuum are checked at the chain's end.
- `pytest -m faults_each` (`make test-faults`): every case alone on a copy of the lake before its stage.
Checks: the lake holds the reference's tables (`codemill.lake.table_digests`, as `python -m codemill.lake --digest
true` prints them), no stage is left pending, `outcomes` accounts for every input record once, and vacuum leaves no
file that no table references. The suite writes the verdicts of the cases it ran into the table of docs/lake.md
(between its `faults-table` markers); tests/faults/test_registry.py checks that table and that every kill point in
the code has a case here. The trainer's kill mid-phase and resume is tests/faults/test_trainer_kill.py.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from codemill import faults
from codemill.lake import Lake, table_digests
from spark_jobs import accounting, pipeline
from tests.codemill.test_lake import data_files, live_files
from tests.faults.cases import CASES, GROUPS, OWN_JVM, Case, case_id
from tests.faults.docs_table import write_table

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Columns that differ between two runs by design: run ids, and the absolute paths of the shard folders.
IGNORE = ["run_id", "ingest_run", "path"]
RESULTS: dict[Case, bool] = {}
HOW: dict[Case, str] = {}  # "chain" or "alone"
STARTED = time.perf_counter()


@pytest.fixture(scope="module", autouse=True)
def faults_table():
    """Writes the verdicts of the cases that ran into the docs/lake.md table (the others keep theirs)."""
    yield
    if RESULTS:
        write_table(CASES, RESULTS, HOW)
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


def _run_chain(spark, cases: list[Case], group: Group, work: Path, *, how: str) -> None:
    """Kills the job at each case's point in turn, on one copy of the lake before the first case's stage: each killed
    run is the re-run of the run killed before it, so it starts by recovering from that kill. After the last kill in
    a stage, the stage is re-run here to its end, and the lake must then hold the reference's tables as they were
    after that stage (and, for tokenize, its shard files). At the end: no stage left pending, `outcomes` accounts for
    every input record once, and vacuum leaves no file that no table references. Records a verdict per case."""
    ref, args = group.ref, group.args(work)
    lake_dir = work / "lake"
    start = ref.before[cases[0][1]]
    _copy(start, lake_dir)
    for case in cases:
        RESULTS.pop(case, None)  # a verdict only from a check: a harness failure (an OOM-killed JVM) leaves none
    verified: list[Case] = []
    done = ref.order.index(cases[0][1]) - 1  # the last stage the lake holds complete
    for i, case in enumerate(cases):
        _, stage, point = case
        for between in ref.order[done + 1:ref.order.index(stage)]:  # a stage without a case runs as usual
            pipeline.main(args + ["--stages", between])
        done = ref.order.index(stage) - 1
        log = work / f"killed-{i}.log"
        t0 = time.perf_counter()
        rc = _run_killed(spark, args + ["--stages", stage], point, log, own_jvm=case in OWN_JVM)
        assert rc == -signal.SIGKILL, f"the {stage} job was not killed at {point} (exit {rc}):\n" + \
            log.read_text(errors="replace")[-3000:]
        print(f"\n[faults] {how} {case_id(case)}: killed after {time.perf_counter() - t0:.1f} s", flush=True)
        if i + 1 < len(cases) and cases[i + 1][1] == stage:
            continue  # the next case's killed run is this one's re-run
        pipeline.main(args + ["--stages", stage])
        done = ref.order.index(stage)
        stage_cases = [c for c in cases if c[1] == stage]
        got, want = table_digests(str(lake_dir), ignore=IGNORE), ref.digests[stage]
        _verdict(stage_cases, got == want, f"killed at {[c[2] for c in stage_cases]}, re-run: the tables differ "
                 f"from the reference's after {stage}: {sorted(set(got) ^ set(want))}", how)
        if group.shards is not None:
            _verdict(stage_cases, _shard_files(work / "shards") == _shard_files(group.shards),
                     f"killed at {[c[2] for c in stage_cases]}, re-run: shard files differ from the reference's", how)
        verified += stage_cases
    lake = Lake(spark, str(lake_dir))
    t0 = time.perf_counter()
    _verdict(verified, lake.pending_stages() == {}, "a stage was left pending", how)
    _verdict(verified, _accounted(lake), "outcomes do not account for every input record once", how)
    orphans = _orphans(lake_dir, start, spark)
    _verdict(verified, orphans == {}, f"unreferenced files after vacuum: {orphans}", how)
    print(f"\n[faults] {how}: {len(cases)} kills; end checks {time.perf_counter() - t0:.1f} s", flush=True)


def _verdict(cases: list[Case], ok: bool, message: str, how: str) -> None:
    for case in cases:
        RESULTS[case] = ok and RESULTS.get(case, True)
        HOW[case] = how
    assert ok, message


def _accounted(lake: Lake) -> bool:
    if not lake.exists("outcomes"):
        return True
    summary = accounting.summarize(lake.read("outcomes"))
    return summary["records"] == lake.read("files").count() + lake.read("quarantine").count() and \
        summary["duplicate_doc_ids"] == 0


class _Reference:
    """A group's uninterrupted run: the lake copied before and after each stage, and its table digests after it."""

    def __init__(self, root: Path):
        self.root, self.before, self.after, self.digests, self.order = root, {}, {}, {}, []

    def run(self, args: list[str], stage: str, lake_dir: Path) -> None:
        self.before[stage] = _copy(lake_dir, self.root / f"before-{stage}") if lake_dir.exists() else None
        pipeline.main(args + ["--stages", stage])
        self.after[stage] = _copy(lake_dir, self.root / f"after-{stage}")
        self.digests[stage] = table_digests(str(lake_dir), ignore=IGNORE)
        self.order.append(stage)


@dataclasses.dataclass
class Group:
    """A group of cases: its reference run, the pipeline's arguments for a working folder (its lake: `work/lake`),
    and the reference's shard files (tokenize), compared with `work/shards`."""

    ref: _Reference
    args: Callable[[Path], list[str]]
    shards: Path | None = None


# ---------------------------------------------------------------------- curation
def _curation_args(repos: Path, lake_dir: Path) -> list[str]:
    return ["--input", str(repos), "--lake", str(lake_dir), "--ingest.max_bytes", "2000", "--near_dedup.num_perm",
            "64", "--documents.max_chars", "1000", "--print_funnel", "false"]


@pytest.fixture(scope="module")
def curation(spark, tmp_path_factory) -> Group:
    from tests.fixtures.curation.build import TREE_OUTCOMES, make_tree

    root = tmp_path_factory.mktemp("faults-curation")
    repos = make_tree(root / "repos")
    ref = _Reference(root)
    lake_dir = root / "reference"
    for stage in pipeline.CURATION:
        ref.run(_curation_args(repos, lake_dir), stage, lake_dir)
    lake = Lake(spark, str(lake_dir))
    assert accounting.summarize(lake.read("outcomes"))["records"] == len(TREE_OUTCOMES)
    return Group(ref, lambda work: _curation_args(repos, work / "lake"))


@pytest.fixture(scope="module")
def incremental(spark, curation, tmp_path_factory) -> Group:
    """A lake whose near dedup ran on part of exact_deduped, which then grew: the incremental run's input (near
    dedup's incremental path, on the distributed clustering path: the full path above runs the one-task one)."""
    root = tmp_path_factory.mktemp("faults-incremental")
    lake_dir = _copy(curation.ref.after["exact_dedup"], root / "lake")  # curation.args(root)'s lake
    lake = Lake(spark, str(lake_dir))
    full = lake.read("exact_deduped").localCheckpoint()
    ids = sorted(r.doc_id for r in full.select("doc_id").collect())
    lake.overwrite("exact_deduped", full.where(~full.doc_id.isin(ids[::3])))
    pipeline.main(curation.args(root) + ["--stages", "near_dedup"])
    lake.overwrite("exact_deduped", full)
    inc = ["--near_dedup.incremental", "true", "--near_dedup.local_max_edges", "0"]
    ref = _Reference(root)
    ref.run(curation.args(root) + inc, "near_dedup", lake_dir)
    return Group(ref, lambda work: curation.args(work) + inc)


# ---------------------------------------------------------------------- score
@pytest.fixture(scope="module")
def score(spark, curation, tmp_path_factory) -> Group:
    """The curation reference's clean table scored by a tiny exported annotator (tests/spark_jobs/test_annotate)."""
    from tests.spark_jobs.test_annotate import tiny_parts
    from trainer.annotator_model import export_annotator

    root = tmp_path_factory.mktemp("faults-score")
    export_annotator(root / "annotator", **tiny_parts())
    lake_dir = _copy(curation.ref.after["outcomes"], root / "reference")
    ref = _Reference(root)
    ref.run(_score_args(lake_dir, root), "score", lake_dir)
    return Group(ref, lambda work: _score_args(work / "lake", root))


def _score_args(lake_dir: Path, root: Path) -> list[str]:
    return ["--lake", str(lake_dir), "--score.annotator", str(root / "annotator"), "--score.window", "64",
            "--print_funnel", "false"]


# ---------------------------------------------------------------------- tokenize
def _tokenize_args(lake_dir: Path, shards: Path) -> list[str]:
    return ["--lake", str(lake_dir), "--tokenize", "conf/spark/tokenize.yaml", "--tokenize.shards_root", str(shards),
            "--tokenize.seq_len", "128", "--tokenize.num_shards", "2", "--tokenize.val_fraction", "0.15",
            "--tokenize.chunk_bytes", "8KB", "--tokenize.tokenizer.vocab_size", "600",
            "--tokenize.tokenizer.sample_docs", "100", "--print_funnel", "false"]


@pytest.fixture(scope="module")
def tokenize(spark, tmp_path_factory) -> Group:
    from tests.spark_jobs.test_tokenize_shards import _make_lake

    root = tmp_path_factory.mktemp("faults-tokenize")
    lake_dir = root / "reference"
    _make_lake(spark, str(lake_dir))
    ref = _Reference(root)
    ref.run(_tokenize_args(lake_dir, root / "shards"), "tokenize", lake_dir)
    return Group(ref, lambda work: _tokenize_args(work / "lake", work / "shards"), shards=root / "shards")


# ---------------------------------------------------------------------- synth
def _synth_args(lake_dir: Path, model: Path) -> list[str]:
    return ["--lake", str(lake_dir), "--synth", "conf/synth/local.yaml", "--synth.chunk_size", "1",
            "--synth.engine.model", str(model), "--synth.sampling.max_new_tokens", "24",
            "--synth.sampling.temperature", "0.0", "--synth.filter.decontaminate.enabled", "false",
            "--print_funnel", "false"]


def _tiny_generator(path: Path) -> Path:
    """A one-layer Llama with random weights and SmolLM2's tokenizer (its chat template), saved as a Hugging Face
    folder: the suite checks synth's commits, not its text, and loading and running the embedded 135M model made
    each killed child ~3x slower (the chain's three kills: 107 s instead of 35 s)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from codemill.models import convert_embedded

    tok = AutoTokenizer.from_pretrained(convert_embedded())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def synth(spark, tmp_path_factory) -> Group:
    from tests.synth.conftest import write_seeds

    root = tmp_path_factory.mktemp("faults-synth")
    model = _tiny_generator(root / "generator")
    lake_dir = root / "reference"
    write_seeds(Lake(spark, str(lake_dir)))
    ref = _Reference(root)
    ref.run(_synth_args(lake_dir, model), "synth", lake_dir)
    return Group(ref, lambda work: _synth_args(work / "lake", model))


# ---------------------------------------------------------------------- the cases
@pytest.mark.faults
@pytest.mark.parametrize("group", GROUPS)
def test_group_killed_at_every_point_in_a_chain(request, spark, group, tmp_path):
    """CI's run: the group's cases in one chain (each killed run re-runs the one before; `_run_chain`)."""
    _run_chain(spark, [c for c in CASES if c[0] == group], request.getfixturevalue(group), tmp_path, how="chain")


@pytest.mark.faults_each
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case_killed_alone_and_rerun(request, spark, case, tmp_path):
    """`make test-faults`: each case on a copy of the reference's lake before its stage, re-run once."""
    _run_chain(spark, [case], request.getfixturevalue(case[0]), tmp_path, how="alone")
