"""Decontamination quality and speed, before vs after: recall and precision on a labelled set of planted copies.

    .venv/bin/python bench/decontam_quality.py [--tasks 20] [--seed 0] [--previous auto] [--rounds 3]

The set is `tests/fixtures/decontam/build.py`: for 18 benchmark files in 16 languages (HumanEval-X, Multi-HumanEval,
MBXP, MultiPL-E, and HumanEval / MBPP for Python), `--tasks` tasks each planted into real code of this machine as
solution, prompt+solution, 50-80% partial and prompt+tests (positives), plus near-misses (the task's function header
with another body) and the clean carriers (negatives). Labels come from how a sample was made, not from a
similarity.

Both matchers run in this process on the same samples (the code a Spark worker runs per file, `match_text`):
- after: `spark_jobs/benchmark_index.py` and `conf/spark/benchmarks.yaml` of this checkout, `DecontaminateConfig()`;
- before: both files at `--previous` (`auto`: the newest commit whose benchmark_index.py has no `min_task_ngrams`),
  taken from `git show` into a temporary module, with the same `ngram`, `min_overlap`, `min_short_chars`.
Figures: recall and precision overall, per language and per kind of planting; files flagged among real code of
this machine (the carrier pool, unplanted: every flag there is a false positive or real code that contains a
benchmark task, listed for a look); matching speed (MB per CPU second over the real code, medians of ABBA
rounds after a warm-up; CPU time of this process, as wall time on a shared machine measures the neighbours) and its
ratio after/before. Ends with one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(REPO / "bench")]
sys.path.insert(0, str(REPO))

from codemill.benchmarks import load_catalogue  # noqa: E402
from spark_jobs import decontaminate as dc  # noqa: E402
from tests.fixtures.decontam import build  # noqa: E402


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def previous_matcher(rev: str, cfg: dc.DecontaminateConfig):
    """(match function, revision) of benchmark_index.py and the catalogue at `rev`."""
    if rev == "auto":
        revs = _git("log", "--format=%H", "--", "spark_jobs/benchmark_index.py").split()
        rev = next((r for r in revs if "min_task_ngrams" not in _git("show", f"{r}:spark_jobs/benchmark_index.py")),
                   None)
        if rev is None:
            raise SystemExit("no commit has spark_jobs/benchmark_index.py without min_task_ngrams; pass --previous")
    tmp = Path(tempfile.mkdtemp(prefix="codemill-bench-decontam-"))
    (tmp / "index_prev.py").write_text(_git("show", f"{rev}:spark_jobs/benchmark_index.py"))
    (tmp / "benchmarks.yaml").write_text(_git("show", f"{rev}:conf/spark/benchmarks.yaml"))
    spec = importlib.util.spec_from_file_location("codemill_bench_index_prev", tmp / "index_prev.py")
    prev = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = prev  # dataclasses look their module up there
    spec.loader.exec_module(prev)
    texts = prev.benchmark_texts(load_catalogue(tmp / "benchmarks.yaml", cfg.data_dir))
    index = prev.build_index(texts, ngram=cfg.ngram, min_short_chars=cfg.min_short_chars)

    def match(content: str) -> list:
        return prev.match_text(content, index, ngram=cfg.ngram, min_overlap=cfg.min_overlap,
                               min_matched=cfg.min_matched_ngrams)

    return match, rev


def quality(samples, flagged: list[bool]) -> dict:
    """recall, precision and counts, overall and per language and kind."""
    def score(pairs):
        tp = sum(1 for s, f in pairs if s.label and f)
        fn = sum(1 for s, f in pairs if s.label and not f)
        fp = sum(1 for s, f in pairs if not s.label and f)
        tn = sum(1 for s, f in pairs if not s.label and not f)
        return {"recall": round(tp / (tp + fn), 4) if tp + fn else None,
                "precision": round(tp / (tp + fp), 4) if tp + fp else None, "tp": tp, "fn": fn, "fp": fp, "tn": tn}

    pairs = list(zip(samples, flagged))
    by = {key: collections.defaultdict(list) for key in ("language", "kind")}
    for s, f in pairs:
        for key in by:
            by[key][getattr(s, key)].append((s, f))
    return {"all": score(pairs), **{f"by_{k}": {v: score(p) for v, p in sorted(g.items())} for k, g in by.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20, help="tasks per benchmark file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--previous", default="auto", help="git revision of the matcher to compare with")
    ap.add_argument("--rounds", type=int, default=5, help="ABBA pairs of before/after speed runs")
    ap.add_argument("--carriers", nargs="*", help="carrier folders (default: the machine's own code)")
    args = ap.parse_args()
    os.environ["CODEMILL_CACHE_DIR"] = tempfile.mkdtemp(prefix="codemill-bench-cache-")  # build, never reuse

    cfg = dc.DecontaminateConfig()
    samples = build.samples(tasks=args.tasks, seed=args.seed, roots=args.carriers)
    digest = build.digest(samples)
    mb = sum(len(s.content.encode()) for s in samples) / 1e6
    print(f"set: {len(samples)} samples ({sum(s.label for s in samples)} positive), {mb:.1f} MB, digest {digest}")
    index = dc.benchmark_index(cfg)
    matchers = {"after": lambda content: dc.benchmark_hits(content, index, cfg)}
    matchers["before"], rev = previous_matcher(args.previous, cfg)

    def run(name: str) -> list[bool]:
        return [bool(matchers[name](s.content)) for s in samples]

    flagged = {name: run(name) for name in ("before", "after")}
    scores = {name: quality(samples, f) for name, f in flagged.items()}

    # Real code, unplanted: the whole carrier pool (every flag is listed for a look). Speed is measured here, on
    # what the stage meets (most files hold no benchmark text), after this untimed warm-up pass.
    pool = [t for texts in build.carriers(args.carriers or build.default_carrier_roots()).values() for t in texts]
    real = {name: [path for path, text in pool if matchers[name](text)] for name in ("before", "after")}
    pool_mb = sum(len(t.encode()) for _, t in pool) / 1e6
    seconds: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(args.rounds * 2):
        for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
            t0 = time.process_time()  # CPU seconds: on a shared machine wall time measures the neighbours
            for _, text in pool:
                matchers[name](text)
            seconds[name].append(time.process_time() - t0)
    speed = {name: pool_mb / statistics.median(t) for name, t in seconds.items()}

    for name in ("before", "after"):
        a = scores[name]["all"]
        print(f"{name} ({rev[:12] if name == 'before' else 'this checkout'}): recall {a['recall']:.4f} precision "
              f"{a['precision']:.4f} (tp {a['tp']} fn {a['fn']} fp {a['fp']} tn {a['tn']}); "
              f"{speed[name]:.2f} MB/CPU-s on real code; real code flagged {len(real[name])} of {len(pool)} files")
    print(f"{'language':12s} {'before recall':>13s} {'after recall':>12s} {'after precision':>15s}  positives")
    for lang, a in scores["after"]["by_language"].items():
        b = scores["before"]["by_language"][lang]
        print(f"{lang:12s} {b['recall']:13.4f} {a['recall']:12.4f} {a['precision']:15.4f}  {a['tp'] + a['fn']}")
    for kind, a in scores["after"]["by_kind"].items():
        b = scores["before"]["by_kind"][kind]
        print(f"kind {kind:16s} before recall {b['recall']} fp {b['fp']}; after recall {a['recall']} fp {a['fp']}")
    missed = [s.id for s, f in zip(samples, flagged["after"]) if s.label and not f]
    wrong = [s.id for s, f in zip(samples, flagged["after"]) if not s.label and f]
    print("after, missed copies:", missed)
    print("after, flagged negatives:", wrong)
    print("after, real files flagged:", real["after"])
    result = {
        "set": {"samples": len(samples), "positives": sum(s.label for s in samples), "mb": round(mb, 2),
                "digest": digest, "tasks_per_file": args.tasks, "seed": args.seed},
        "previous": rev[:12],
        "recall": {"before": scores["before"]["all"]["recall"], "after": scores["after"]["all"]["recall"]},
        "precision": {"before": scores["before"]["all"]["precision"], "after": scores["after"]["all"]["precision"]},
        "by_language_after": {k: {"recall": v["recall"], "precision": v["precision"]}
                              for k, v in scores["after"]["by_language"].items()},
        "by_language_before": {k: {"recall": v["recall"], "precision": v["precision"]}
                               for k, v in scores["before"]["by_language"].items()},
        "by_kind_after": {k: {"recall": v["recall"], "fp": v["fp"]} for k, v in scores["after"]["by_kind"].items()},
        "real_code_flagged": {"files": len(pool), "mb": round(pool_mb, 1), "before": len(real["before"]),
                              "after": len(real["after"])},
        "match_mb_per_cpu_s": {k: round(v, 3) for k, v in speed.items()},
        "speed_after_vs_before": round(speed["after"] / speed["before"], 3),
        "match_cpu_s": {k: [round(t, 2) for t in v] for k, v in seconds.items()},
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
