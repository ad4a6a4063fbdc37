"""`make demo`: every phase of the recipe end to end on the embedded default, on real code from this machine.

    python -m scripts.demo                      # after scripts/setup.sh (make demo does both)
    python -m scripts.demo --corpus_mb 60 --out demo_out

It builds a corpus from this machine's code (`scripts/local_corpus.py`), then runs the pipeline's every stage
(`spark_jobs/pipeline.py --stages all`, settings in conf/spark/pipeline.yaml with the conf/spark/demo.yaml overlay):
curation, annotator training set, annotator training (MiniLM, CPU), scoring, selection, synthetic generation
(SmolLM2-135M-Instruct, CPU), tokenizer and the three phase shards, trainer phases 1-3 (debug model), pass@1 of each
phase's checkpoint, and the HTML report. It prints each stage's wall time and, at the end, where everything is. A
second run skips every stage whose inputs and settings have not changed (`--force true` re-runs them all).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from codemill.config import CONF_DIR, REPO_ROOT, parse_config
from scripts.local_corpus import build_local_corpus
from spark_jobs import pipeline


@dataclasses.dataclass
class DemoConfig:
    """`python -m scripts.demo` keys."""

    # Folder for everything the demo writes.
    out: str = str(REPO_ROOT / "demo_out")
    # Size of the local real-code corpus.
    corpus_mb: float = 25.0
    # Seeds per language for synthetic generation (Python gets twice as many: phase 3 raises Python's share).
    synth_seeds: int = 1
    force: bool = False

    def validate(self) -> list[str]:
        return [] if self.corpus_mb > 0 and self.synth_seeds >= 1 else ["corpus_mb, synth_seeds: must be positive"]


def pipeline_args(cfg: DemoConfig) -> list[str]:
    """The demo's pipeline command line: the demo overlay, its folders and the corpus-sized budget."""
    out = Path(cfg.out).resolve()
    # The paper keeps 12.5B of ~400B tokens; the demo keeps about a third of its corpus.
    budget = int(cfg.corpus_mb * 1e6 / 4 / 3)
    return ["--config", str(CONF_DIR / "spark" / "demo.yaml"), "--stages", "all",
            "--input", str(out / "corpus"), "--lake", str(out / "lake"),
            "--score.annotator", str(out / "annotator"), "--select.token_budget", str(budget),
            "--synth.seeds.languages", json.dumps(["python", "java", "c", "javascript", "shell"]),
            "--synth.seeds.default_quota", str(cfg.synth_seeds),
            "--synth.seeds.quota_per_language", json.dumps({"python": cfg.synth_seeds * 2}),
            "--synth.sampling.max_new_tokens", "192", "--synth.chunk_size", "8",
            "--tokenize.shards_root", str(out / "shards"), "--tokenize.seq_len", "256",
            "--train.run_root", str(out / "runs"), "--report.out", str(out / "report"),
            "--force", str(cfg.force).lower()]


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(DemoConfig, argv, prog="python -m scripts.demo", description=__doc__)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{out / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = tracking  # the trainer and evaluation processes inherit it
    t0 = time.time()
    print("[demo] corpus of real code from this machine ...", flush=True)
    used = build_local_corpus(out / "corpus", mb=cfg.corpus_mb)
    print("  corpus MB per source:", {k: round(v / 1e6, 1) for k, v in used.items()}, flush=True)
    timings = {"corpus": round(time.time() - t0, 1)}
    summary = pipeline.main(pipeline_args(cfg) + ["--report.mlflow_tracking_uri", tracking])
    timings.update({s["stage"]: s["seconds"] for s in summary["stages"]})
    total = time.time() - t0
    print(f"\n=== codemill demo finished in {total:,.0f} s ===")
    for name, took in timings.items():
        print(f"  {took:8.1f} s  {name}")
    (out / "timings.json").write_text(json.dumps(dict(timings, total=total), indent=1))
    print(f"\ntables:     {out / 'lake'}  (python -m codemill.lake --lake {out / 'lake'} lists them)")
    print(f"shards:     {out / 'shards'}")
    print(f"checkpoints:{out / 'runs'}/phase{{1,2,3}}/hf")
    print(f"MLflow:     {tracking}  (mlflow ui --backend-store-uri {tracking})")
    print(f"report:     {out / 'report' / 'index.html'}")
    print(f"notebook:   notebooks/quality_scores.ipynb (CODEMILL_LAKE={out / 'lake'})")
    return summary


if __name__ == "__main__":
    main()
