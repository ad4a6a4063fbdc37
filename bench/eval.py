"""Sandbox throughput: every benchmark's canonical solutions, executed with and without the sandbox.

    .venv/bin/python -m bench.eval                       # all benchmarks, 2 workers (make bench-eval)
    .venv/bin/python -m bench.eval --benchmarks humaneval mbpp --workers 4
    .venv/bin/python -m bench.eval --benchmarks humaneval mbpp --before c829908  # also the sandbox of a commit

The arms, all in the same run on the same samples:
- sandboxed: trainer/evaluation/sandbox.py as configured (`isolation: strict`: Landlock + seccomp + rlimits);
- unconfined (`isolate=False`): the same fork server, candidate/checker processes and channel without any
  limit or confinement, so sandboxed/unconfined is the confinement's own cost;
- `--before REV`: the sandbox module of git revision REV (loaded from `git show`), so the figure compares with
  the previous design in the same run (assert samples get their tests appended, as that design ran them);
- python -c: the assert-style samples (HumanEval, MBPP) as plain `python -c` subprocesses, the naive harness.
Expected outputs of the differential benchmarks are computed before timing. Also checks the acceptance
criterion: canonical pass@1 must be 1.0 everywhere. Ends with one line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_before(rev: str, jobs: list, cfg) -> tuple[float, int]:
    """Runs `jobs` through the sandbox module of git revision `rev`; returns (seconds, passed)."""
    import dataclasses  # here, not on top: bench/tokenize.py shadows the stdlib module `inspect` imports
    import importlib

    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:trainer/evaluation/sandbox.py"],
                            capture_output=True, text=True, check=True).stdout
    folder = tempfile.mkdtemp(prefix="codemill-bench-before-")
    Path(folder, "codemill_sandbox_before.py").write_text(source)
    sys.path.insert(0, folder)  # spawned pool workers inherit sys.path
    old = importlib.import_module("codemill_sandbox_before")
    fields = {f.name for f in dataclasses.fields(old.Job)}
    old_jobs = [old.Job(**{k: v for k, v in dataclasses.asdict(j).items() if k in fields and k != "program"},
                        program=j.program + j.tests) for j in jobs]
    with old.SandboxPool(old.SandboxConfig(timeout_s=cfg.timeout_s, memory_mb=cfg.memory_mb,
                                           workers=cfg.workers)) as pool:
        t0 = time.perf_counter()
        results = pool.run(old_jobs)
        return time.perf_counter() - t0, sum(r.passed for r in results)


def main() -> None:
    from trainer.evaluation.run import canonical_samples, execute_samples, ground_truth, job_for, load_tasks, score
    from trainer.evaluation.sandbox import SandboxConfig, SandboxPool, run_unsandboxed

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmarks", nargs="+", default=["humaneval", "humaneval_plus", "mbpp", "mbpp_plus",
                                                         "evoeval"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout_s", type=float, default=20.0)
    ap.add_argument("--cache", default=None, help="expected-outputs cache folder to reuse (default: a fresh one)")
    ap.add_argument("--before", default=None, help="also time the sandbox of this git revision (e.g. c829908)")
    args = ap.parse_args()

    cfg = SandboxConfig(timeout_s=args.timeout_s, memory_mb=4096, workers=args.workers)
    tasks = load_tasks(args.benchmarks)
    samples = canonical_samples(tasks)
    cache = args.cache or tempfile.mkdtemp(prefix="codemill-bench-eval-")
    with SandboxPool(cfg) as pool:
        isolation = pool.isolation
        t0 = time.perf_counter()
        gts = ground_truth(tasks, pool, cache_dir=cache)
        gt_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = execute_samples(samples, pool, cache_dir=cache)
        sandboxed_s = time.perf_counter() - t0
    # The baseline runs the scorable samples (a task without expected outputs has nothing to compare against).
    scorable = [s for s, r in zip(samples, results) if r.status != "error"]
    jobs = [job_for(s, gts.get((s.task.benchmark, s.task.task_id)), cfg) for s in scorable]
    with SandboxPool(cfg, isolate=False) as pool:
        t0 = time.perf_counter()
        plain = pool.run(jobs)
        unsandboxed_s = time.perf_counter() - t0
    before = run_before(args.before, jobs, cfg) if args.before else None
    assert_jobs = [j for j in jobs if j.inputs is None and j.inputs_source is None]
    t0 = time.perf_counter()
    sub_ok = run_unsandboxed([j.program + j.tests for j in assert_jobs], workers=args.workers,
                             timeout_s=args.timeout_s)
    subprocess_s = time.perf_counter() - t0

    metrics = score(samples, results)
    print(f"{len(samples)} canonical samples over {len(tasks)} tasks, {args.workers} workers "
          f"(ground truth for differential tasks: {gt_s:.1f}s)")
    for key in sorted(k for k in metrics if "/pass@1" in k):
        print(f"  {key:28s} {metrics[key]:.4f}   (tasks {int(metrics.get(key.split('/')[0] + '/n_tasks', 0))})")
    failed = [(s.task.task_id, r.status, r.detail) for s, r in zip(samples, results) if not r.passed]
    for f in failed[:20]:
        print("  FAILED", *f)
    sps = len(samples) / sandboxed_s
    ups = len(scorable) / unsandboxed_s
    subps = len(assert_jobs) / subprocess_s
    print(f"sandboxed ({isolation}): {sandboxed_s:7.1f}s  {sps:7.1f} samples/s  "
          f"(passed {sum(r.passed for r in results)})")
    print(f"unconfined:  {unsandboxed_s:7.1f}s  {ups:7.1f} samples/s  (passed {sum(r.passed for r in plain)})")
    extra = {}
    if before is not None:
        bps = len(scorable) / before[0]
        print(f"sandbox of {args.before}: {before[0]:7.1f}s  {bps:7.1f} samples/s  (passed {before[1]})")
        print(f"sandboxed / {args.before} throughput: {sps / bps:.3f}")
        extra = {"samples_per_s_before": round(bps, 2), "ratio_vs_before": round(sps / bps, 3),
                 "before": args.before}
    print(f"python -c subprocess (assert-style only, {len(assert_jobs)} samples): {subprocess_s:.1f}s "
          f"{subps:.1f} samples/s (passed {sum(sub_ok)})")
    print(f"sandboxed / unsandboxed throughput: {sps / ups:.3f}")
    print("RESULT " + json.dumps({
        "samples_per_s_sandboxed": round(sps, 2), "samples_per_s_unsandboxed": round(ups, 2),
        "ratio": round(sps / ups, 3), "samples": len(samples), "canonical_failures": len(failed),
        "samples_per_s_python_subprocess": round(subps, 2), "isolation": isolation, **extra,
    }))


if __name__ == "__main__":
    main()
