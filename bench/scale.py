"""Scale bench: the phase-1 pipeline, scoring with the debug annotator and tokenization, at three or more sizes of
real code, with executors capped at 1 GB; then the skew cases.

    .venv/bin/python bench/scale.py                                   # 250, 1000, 2000 MB + full-size skew cases
    .venv/bin/python bench/scale.py --sizes 4,8,16 --skew-scale 0.002 --master 'local[2]'    # minutes: a check

For every size, a corpus of this machine's code (`scripts/local_corpus.py`: the Python standard library and
installed packages, the JDK's sources, C headers, npm, shell scripts; `--extra-code DIR` adds more, e.g. packages
fetched from PyPI or npm with their ordinary clients) runs through `spark_jobs.pipeline` one stage at a time in one
Spark session: ingest, filter, exact_dedup, near_dedup, decontaminate, documents (phase 1), annotator_dataset,
annotator_train (conf/annotator/debug.yaml), score, select, tokenize (phases 1 and 2; phase 3 is GPU generation).
The session runs on `--master` (default `local-cluster[2,1,1024]`: two executor JVMs of one core and 1 GB each,
`spark.executor.memory=1g`, so nothing fits only because one JVM holds the whole machine's memory).

Measured per stage: CPU-seconds of the whole process tree (driver, its JVM, executors, Python workers) and wall
seconds; per Spark stage, the task times from Spark's event log, and max/median task time (Spark stages of at least
4 tasks whose longest task takes at least `--skew-floor-s`: below that a ratio measures scheduling noise). Peak
driver RSS (the Python driver plus its JVM; with `local[N]` the JVM also runs the tasks). Then, per pipeline stage and
end to end, cost = fixed + marginal x MB (least squares over the sizes), the growth exponent (log-log slope) and
core-hours for 1.6 TB (1.6e6 MB x marginal CPU-s per MB / 3600: what the fixed costs do not change at that size).

Skew cases (`skew_corpus`), each a tree of repositories run through the same stages, each must finish with no
Spark stage above 5x max/median: one file copied 50,000 times, one repository of 200,000 small files, one
language holding 90% of the bytes, one 20 MB file (`--skew-scale` shrinks counts and sizes; tests/bench runs them
at 0.002). Ends with `RESULT {json}`.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]
_ROOT = os.path.dirname(_HERE)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.dedup import fit, run_worker, tree_cpu_seconds  # noqa: E402

ROOT = Path(_ROOT)
OUT = ROOT / "bench" / "out" / "scale"
STAGES = ("ingest", "licences", "filter", "exact_dedup", "near_dedup", "redact", "decontaminate", "documents",
          "annotator_dataset", "annotator_train", "score", "tokenizer", "select", "tokenize")
PHASE1 = STAGES[:8]
TB_1P6_MB = 1.6e6
MAX_SKEW = 5.0


# ------------------------------------------------------------------------------------------------ corpora
def skew_corpus(out: Path, case: str, *, scale: float = 1.0, seed: int = 0) -> Path:
    """A repository tree for one skew case, `scale` x its full size (counts and bytes)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rnd = random.Random(seed)

    def code(i: int, lines: int = 30) -> str:
        return "".join(f"def f_{i}_{k}(x):\n    return x * {rnd.randrange(10**6)} + {k}\n" for k in range(lines))

    if case == "duplicated_file":  # one file, 50,000 copies over 500 repositories
        text, copies = code(0, 40), max(2, int(50_000 * scale))
        for i in range(copies):
            d = out / f"repo{i % 500:03d}"
            d.mkdir(exist_ok=True)
            (d / f"copy_{i}.py").write_text(text)
        for i in range(max(2, copies // 50)):  # some unique files, so that the other stages see work too
            (out / f"repo{i % 500:03d}" / f"own_{i}.py").write_text(code(i + 1))
    elif case == "huge_repository":  # one repository of 200,000 small files, next to a few ordinary ones
        big = out / "monorepo" / "src"
        for i in range(max(2, int(200_000 * scale))):
            d = big / f"pkg{i // 1000:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"m{i}.py").write_text(f"VALUE_{i} = {rnd.randrange(10**9)}\n")
        for r in range(8):
            (out / f"small{r}").mkdir()
            (out / f"small{r}" / "main.py").write_text(code(r))
    elif case == "one_language":  # 90% of the bytes Python, the rest spread over four languages
        total = max(200_000, int(400e6 * scale))
        shares = {"py": 0.9, "js": 0.025, "java": 0.025, "c": 0.025, "sh": 0.025}
        for ext, share in shares.items():
            written, i = 0, 0
            while written < total * share:
                d = out / f"{ext}_repo{i % 50:02d}"
                d.mkdir(exist_ok=True)
                body = {"py": code(i), "js": f"function f{i}(x) {{ return x + {rnd.random()}; }}\n" * 40,
                        "java": f"class C{i} {{ int f(int x) {{ return x + {rnd.randrange(999)}; }} }}\n" * 30,
                        "c": f"int f{i}(int x) {{ return x * {rnd.randrange(999)}; }}\n" * 40,
                        "sh": f"echo {rnd.random()} >> /tmp/out_{i}\n" * 40}[ext]
                (d / f"f{i}.{ext}").write_text(body)
                written += len(body)
                i += 1
    elif case == "huge_file":  # one 20 MB file among ordinary ones
        (out / "big").mkdir()
        line = "x = [" + ", ".join(str(k) for k in range(200)) + "]\n"
        (out / "big" / "generated.py").write_text(line * max(1, int(20e6 * scale / len(line))))
        for r in range(20):
            (out / f"r{r}").mkdir()
            (out / f"r{r}" / "main.py").write_text(code(r))
    else:
        raise ValueError(f"unknown skew case {case!r}")
    return out


SKEW_CASES = ("duplicated_file", "huge_repository", "one_language", "huge_file")


def real_corpus(out: Path, mb: float, extra: list[str]) -> Path:
    """`scripts.local_corpus` at `mb`, plus copies of the `extra` code folders as repositories."""
    from scripts.local_corpus import build_local_corpus

    shutil.rmtree(out, ignore_errors=True)
    build_local_corpus(str(out), mb=mb)
    for folder in extra:
        shutil.copytree(folder, out / f"extra_{Path(folder).name}", dirs_exist_ok=True)
    return out


# ------------------------------------------------------------------------------------------------ worker
def task_skew(event_log_dir: Path, floor_s: float, min_tasks: int = 4) -> dict[str, dict]:
    """Per pipeline stage (the job group its Spark jobs ran under): Spark stages, their task counts, max and
    median task seconds, and the worst max/median among the Spark stages that count (`min_tasks`, `floor_s`)."""
    group_of_stage, tasks = {}, {}
    # Spark 4 writes rolling event logs: a folder per application (eventlog_v2_<app>/events_<n>_<app>), next to
    # a status marker and Hadoop .crc checksums.
    logs = [p for p in event_log_dir.rglob("*") if p.is_file() and not p.name.startswith((".", "appstatus"))]
    for path in sorted(logs):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                ev = json.loads(line)
                kind = ev.get("Event")
                if kind == "SparkListenerJobStart":
                    group = (ev.get("Properties") or {}).get("spark.jobGroup.id")
                    for sid in ev.get("Stage IDs", []):
                        group_of_stage[sid] = group
                elif kind == "SparkListenerTaskEnd":
                    info = ev["Task Info"]
                    if not info.get("Failed") and not info.get("Killed"):
                        tasks.setdefault(ev["Stage ID"], []).append((info["Finish Time"] - info["Launch Time"]) / 1e3)
    out: dict[str, dict] = {}
    for sid, times in tasks.items():
        stage = out.setdefault(group_of_stage.get(sid) or "other", {"spark_stages": 0, "max_skew": 1.0,
                                                                       "worst": None})
        stage["spark_stages"] += 1
        top, median = max(times), statistics.median(times)
        if len(times) >= min_tasks and top >= floor_s:
            ratio = top / max(median, 1e-3)
            if ratio > stage["max_skew"]:
                stage["max_skew"] = round(ratio, 2)
                stage["worst"] = {"spark_stage": sid, "tasks": len(times), "max_s": top, "median_s": median}
    return out


def worker(args) -> None:
    os.environ.setdefault("CODEMILL_SPARK_LOG_LEVEL", "ERROR")
    from codemill.session import get_spark
    from spark_jobs import pipeline

    work = Path(args.work)
    events = work / "events"
    shutil.rmtree(events, ignore_errors=True)
    events.mkdir(parents=True)
    conf = {"spark.master": args.master, "spark.eventLog.enabled": "true", "spark.eventLog.dir": str(events),
            "spark.eventLog.compress": "false", "spark.executor.memory": "1g", "spark.driver.memory": "2g"}
    spark = get_spark("bench-scale", conf=conf)
    common = ["--config", str(ROOT / "conf" / "spark" / "demo.yaml"), "--input", args.corpus, "--lake",
              str(work / "lake"), "--force", "true", "--annotator.config", "conf/annotator/debug.yaml",
              "--annotator.args", "[]",
              "--score.annotator", str(work / "annotator"), "--tokenize.shards_root", str(work / "shards"),
              "--tokenize.build", json.dumps(["phase1", "phase2"]), "--tokenize.seq_len", "256"]
    stages = {}
    for stage in args.stages.split(","):
        spark.sparkContext.setJobGroup(stage, stage)
        cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
        pipeline.main(common + ["--stages", stage])
        stages[stage] = {"cpu_s": tree_cpu_seconds() - cpu0, "wall_s": time.perf_counter() - t0}
        print(f"[scale] {stage}: {json.dumps(stages[stage])}", file=sys.stderr, flush=True)
    spark.stop()
    skew = task_skew(events, args.skew_floor_s)
    for stage, figures in stages.items():
        figures.update(skew.get(stage, {"spark_stages": 0, "max_skew": 1.0, "worst": None}))
    print(json.dumps({"stages": stages}))


def run_pipeline(corpus: Path, work: Path, args) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--worker", "--corpus", str(corpus), "--work", str(work), "--master",
           args.master, "--stages", args.stages, "--skew-floor-s", str(args.skew_floor_s)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = run_worker(cmd, env=env, cwd=ROOT)  # adds peak_rss_mb (process tree) and driver_rss_mb
    result["mb"] = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()) / 1e6
    return result


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="250,1000,2000", help="corpus sizes in MB (three or more)")
    ap.add_argument("--extra-code", action="append", default=[], help="more code folders (each a repository)")
    ap.add_argument("--master", default="local-cluster[2,1,1024]")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--skew-scale", type=float, default=1.0, help="size of the skew cases (1.0: the full ones)")
    ap.add_argument("--skew-cases", default=",".join(SKEW_CASES))
    ap.add_argument("--skew-floor-s", type=float, default=0.5)
    ap.add_argument("--skip-sizes", action="store_true", help="only the skew cases")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def summarise(runs: list[dict]) -> dict:
    """Per stage and end to end: fixed + marginal x MB, growth exponent, core-hours at 1.6 TB."""
    mb = [r["mb"] for r in runs]
    out = {}
    names = list(runs[0]["stages"])
    for name in names + ["end_to_end", "phase1"]:
        if name == "end_to_end":
            cost = [sum(s["cpu_s"] for s in r["stages"].values()) for r in runs]
        elif name == "phase1":
            cost = [sum(s["cpu_s"] for k, s in r["stages"].items() if k in PHASE1) for r in runs]
        else:
            cost = [r["stages"][name]["cpu_s"] for r in runs]
        f = fit(mb, cost)
        out[name] = {"fixed_cpu_s": round(f["fixed_s"], 2), "marginal_cpu_s_per_mb": round(f["marginal_s_per_mb"], 5),
                     "growth_exponent": round(f["growth_exponent"], 3),
                     "core_hours_1p6tb": round(TB_1P6_MB * f["marginal_s_per_mb"] / 3600, 1)}
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    result: dict = {"master": args.master}
    if not args.skip_sizes:
        sizes = sorted(float(x) for x in args.sizes.split(","))
        if len(sizes) < 3:
            raise SystemExit("--sizes: three or more sizes are needed to fit fixed + marginal cost")
        runs = []
        for size in sizes:
            corpus = real_corpus(OUT / f"corpus-{size:g}", size, args.extra_code)
            run = run_pipeline(corpus, OUT / f"run-{size:g}", args)
            runs.append(run)
            print(f"{run['mb']:.0f} MB: driver RSS {run['driver_rss_mb']:.0f} MB; " + "; ".join(
                f"{k} {v['cpu_s']:.0f} CPU-s {v['wall_s']:.0f} s skew {v['max_skew']}" for k, v in
                run["stages"].items()), flush=True)
        fits = summarise(runs)
        result.update({
            "sizes_mb": [round(r["mb"], 1) for r in runs], "fits": fits,
            "marginal_cpu_s_per_mb": fits["end_to_end"]["marginal_cpu_s_per_mb"],
            "core_hours_1p6tb": fits["end_to_end"]["core_hours_1p6tb"],
            "growth_exponent": fits["end_to_end"]["growth_exponent"],
            "driver_rss_mb": [round(r["driver_rss_mb"]) for r in runs],
            "stage_skew": [{k: v["max_skew"] for k, v in r["stages"].items()} for r in runs],
            "max_skew": max(v["max_skew"] for r in runs for v in r["stages"].values())})
    skew = {}
    for case in [c for c in args.skew_cases.split(",") if c]:
        corpus = skew_corpus(OUT / f"skew-{case}", case, scale=args.skew_scale)
        run = run_pipeline(corpus, OUT / f"skew-run-{case}", args)
        skew[case] = {"mb": round(run["mb"], 2), "max_skew": max(v["max_skew"] for v in run["stages"].values()),
                      "stages": {k: {"max_skew": v["max_skew"], "cpu_s": round(v["cpu_s"], 1), "worst": v["worst"]}
                                 for k, v in run["stages"].items()},
                      "driver_rss_mb": round(run["driver_rss_mb"])}
        skew[case]["ok"] = skew[case]["max_skew"] <= MAX_SKEW
        print(f"skew {case}: {run['mb']:.1f} MB, max/median {skew[case]['max_skew']}", flush=True)
    result["skew"] = skew
    if skew:
        result["skew_max"] = max(s["max_skew"] for s in skew.values())
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
