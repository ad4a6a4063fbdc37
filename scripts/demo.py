"""`make demo`: every phase of the recipe end to end on the embedded default, on real code from this machine.

    python -m scripts.demo                      # after scripts/setup.sh (make demo does both)
    python -m scripts.demo --corpus_mb 60 --out demo_out

Stages: local corpus -> curation (ingest, filters, exact and near dedup, decontamination, documents) ->
annotator training set -> annotator training (MiniLM, CPU) -> scoring -> selection -> synthetic generation
(SmolLM2-135M-Instruct, CPU) -> tokenizer and the three phase shards -> trainer phases 1, 2, 3 (debug model) ->
pass@1 of each phase's checkpoint -> HTML report. Prints each stage's wall time and, at the end, where everything is.
Spark stages share one in-process session; training and evaluation run as their own processes, as on a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Demo:
    def __init__(self, out: Path, corpus_mb: float, synth_seeds: int = 1):
        self.out = out.resolve()
        self.corpus_mb = corpus_mb
        self.synth_seeds = synth_seeds
        self.lake = self.out / "lake"
        self.corpus = self.out / "corpus"
        self.shards = self.out / "shards"
        self.runs = self.out / "runs"
        self.annotator = self.out / "annotator"
        self.report = self.out / "report"
        self.tracking_uri = f"sqlite:///{self.out / 'mlflow.db'}"
        self.timings: list[tuple[str, float]] = []
        self.t0 = time.time()
        self.stage_names: list[str] = []

    # ------------------------------------------------------------------ plumbing
    def run(self, name: str, fn: Callable[[], object]) -> None:
        index = len(self.timings) + 1
        print(f"\n[{index}/{len(self.stage_names)}] {name} ... (elapsed {time.time() - self.t0:,.0f} s)", flush=True)
        start = time.time()
        fn()
        took = time.time() - start
        self.timings.append((name, took))
        print(f"[{index}/{len(self.stage_names)}] {name} done in {took:,.1f} s", flush=True)

    def sh(self, *args: str) -> None:
        """Runs a module in its own process (trainers: their own threads, memory and exit code)."""
        env = dict(os.environ, MLFLOW_TRACKING_URI=self.tracking_uri, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, *args]
        print("  $ " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=REPO, env=env, check=True)

    # ------------------------------------------------------------------ stages
    def corpus_stage(self) -> None:
        from scripts.local_corpus import build_local_corpus

        used = build_local_corpus(self.corpus, mb=self.corpus_mb)
        print("  corpus MB per source:", {k: round(v / 1e6, 1) for k, v in used.items()})

    def curation_stage(self) -> None:
        from spark_jobs import pipeline

        pipeline.main(["--config", str(REPO / "conf/spark/pipeline.yaml"), "--input", str(self.corpus),
                       "--lake", str(self.lake)])

    def annotator_data_stage(self) -> None:
        from spark_jobs import annotate_dataset

        annotate_dataset.main(["--config", str(REPO / "conf/spark/annotate.yaml"), "--lake", str(self.lake)])

    def annotator_train_stage(self) -> None:
        # The embedded MiniLM setup, shortened to fit the demo's budget on 2 CPU cores (docs/annotator.md has the
        # full run's figures): 128-token inputs, 40 optimizer steps, a capped validation and alignment set.
        self.sh("-m", "trainer.annotator", "fit", "--config", str(REPO / "conf/annotator/minilm.yaml"),
                "--data.lake", str(self.lake), "--model.export_dir", str(self.annotator),
                "--data.max_length", "128", "--trainer.max_steps", "40", "--trainer.val_check_interval", "40",
                "--data.max_val_rows", "200", "--data.max_alignment_per_benchmark", "50",
                "--trainer.enable_progress_bar", "false")

    def scoring_stage(self) -> None:
        from spark_jobs import annotate

        annotate.main(["--config", str(REPO / "conf/spark/annotate.yaml"), "--lake", str(self.lake),
                       "--score.annotator", str(self.annotator), "--score.window", "256"])

    def selection_stage(self) -> None:
        from spark_jobs import select_hq

        # The paper keeps 12.5B of ~400B tokens; the demo keeps about a third of its corpus.
        select_hq.main(["--config", str(REPO / "conf/spark/annotate.yaml"), "--lake", str(self.lake),
                        "--select.token_budget", str(int(self.corpus_mb * 1e6 / 4 / 3))])

    def synth_stage(self) -> None:
        from synth import generate

        # A handful of seeds: SmolLM2-135M generates a few dozen tokens/s on 2 CPU cores. Python gets twice the
        # quota of the other languages, as phase 3 raises Python's share.
        generate.main(["--config", str(REPO / "conf/synth/local.yaml"), "--lake", str(self.lake),
                       "--seeds.languages", json.dumps(["python", "java", "c", "javascript", "shell"]),
                       "--seeds.default_quota", str(self.synth_seeds), "--seeds.quota_per_language",
                       json.dumps({"python": self.synth_seeds * 2}), "--sampling.max_new_tokens", "192",
                       "--chunk_size", "8"])

    def tokenize_stage(self) -> None:
        from spark_jobs import tokenize_shards

        tokenize_shards.main(["--config", str(REPO / "conf/spark/tokenize_local.yaml"), "--lake", str(self.lake),
                              "--shards_root", str(self.shards), "--seq_len", "256"])

    def train_stage(self, phase: int) -> Callable[[], None]:
        def run() -> None:
            args = ["-m", "trainer", "fit", "--config", str(REPO / f"conf/train/debug-phase{phase}.yaml"),
                    "--data.shards_root", str(self.shards), "--run_dir", str(self.runs / f"phase{phase}")]
            if phase > 1:
                args += ["--init_from", str(self.runs / f"phase{phase - 1}" / "hf")]
            self.sh(*args)
        return run

    def eval_stage(self, phase: int) -> Callable[[], None]:
        def run() -> None:
            self.sh("-m", "trainer.evaluation", "--config", str(REPO / "conf/eval/demo.yaml"),
                    "--model", str(self.runs / f"phase{phase}" / "hf"), "--lake", str(self.lake))
        return run

    def report_stage(self) -> None:
        from spark_jobs import report

        report.main(["--lake", str(self.lake), "--out", str(self.report), "--shards", str(self.shards),
                     "--mlflow_tracking_uri", self.tracking_uri])

    # ------------------------------------------------------------------ main
    def stages(self) -> list[tuple[str, Callable[[], None]]]:
        stages = [
            ("corpus of real code from this machine", self.corpus_stage),
            ("curation: ingest, filters, exact and near dedup, decontamination, documents", self.curation_stage),
            ("annotator training and alignment sets", self.annotator_data_stage),
            ("annotator training (MiniLM, CPU)", self.annotator_train_stage),
            ("quality scoring", self.scoring_stage),
            ("high-quality selection", self.selection_stage),
            ("synthetic generation (SmolLM2-135M-Instruct, CPU)", self.synth_stage),
            ("tokenizer and phase shards", self.tokenize_stage),
        ]
        for phase in (1, 2, 3):
            stages.append((f"trainer phase {phase} (debug model)", self.train_stage(phase)))
            stages.append((f"evaluation of phase {phase}", self.eval_stage(phase)))
        stages.append(("report", self.report_stage))
        return stages

    def main(self, start: int = 1) -> None:
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        self.out.mkdir(parents=True, exist_ok=True)
        stages = self.stages()
        self.stage_names = [name for name, _ in stages]
        for i, (name, fn) in enumerate(stages, 1):
            if i < start:
                self.timings.append((f"{name} (skipped: --start {start})", 0.0))
                continue
            self.run(name, fn)
        total = time.time() - self.t0
        print(f"\n=== codemill demo finished in {total:,.0f} s ===")
        for name, took in self.timings:
            print(f"  {took:8.1f} s  {name}")
        (self.out / "timings.json").write_text(json.dumps(dict(self.timings, total=total), indent=1))
        print(f"\ntables:     {self.lake}  (python -m spark_jobs.lake {self.lake} lists them)")
        print(f"shards:     {self.shards}")
        print(f"checkpoints:{self.runs}/phase{{1,2,3}}/hf")
        print(f"MLflow:     {self.tracking_uri}  (mlflow ui --backend-store-uri {self.tracking_uri})")
        print(f"report:     {self.report / 'index.html'}")
        print("notebook:   notebooks/quality_scores.ipynb (CODEMILL_LAKE=" + str(self.lake) + ")")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Runs every codemill phase on the embedded default.")
    parser.add_argument("--out", default=str(REPO / "demo_out"), help="folder for everything the demo writes")
    parser.add_argument("--corpus_mb", type=float, default=25.0, help="size of the local real-code corpus")
    parser.add_argument("--synth_seeds", type=int, default=1,
                        help="seeds per language for synthetic generation (Python gets twice as many)")
    parser.add_argument("--start", type=int, default=1, help="resume at this stage number (earlier outputs kept)")
    args = parser.parse_args(argv)
    Demo(Path(args.out), args.corpus_mb, args.synth_seeds).main(start=args.start)


if __name__ == "__main__":
    main()
