"""Throughput of the phase-1 curation stages on real code found on this machine.

    .venv/bin/python bench/curate.py [--mb 200] [--small-mb 50] [--out bench/out/curate]

Builds a corpus of repositories (each top-level folder of a source below becomes one repository): the Python
standard library, installed site-packages, npm packages (/usr/lib/node_modules), C/C++ headers (/usr/include),
Debian-shipped Perl and shell sources (/usr/share). Files are copied (not linked) so that the ingest stage reads a
plain tree. The pipeline runs on the first `--small-mb` MB and on the whole `--mb` MB corpus in fresh lakes.

Figures: MB/s per core per stage (MB into the stage / stage seconds / Spark cores) and end to end (corpus MB / total
seconds / cores), each also as a ratio to a baseline measured in the same run: one Python process reading and
UTF-8-decoding the same files. growth_exponent = log(t_big / t_small) / log(big / small): 1.0 is linear scaling.
Ends with one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# `python bench/curate.py` puts bench/ first on sys.path, where bench/tokenize.py would shadow the stdlib module.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(REPO / "bench")]
sys.path.insert(0, str(REPO))

SOURCES = [
    "/usr/lib/python3.11",
    str(REPO / ".venv/lib/python3.11/site-packages"),
    "/usr/lib/node_modules",
    "/usr/include",
    "/usr/share/perl",
    "/usr/share/perl5",
    "/usr/share/doc",
    "/usr/lib/x86_64-linux-gnu/perl-base",
]
SKIP = {".git", "node_modules", "__pycache__", "test", "tests"}


def candidate_repos(max_file_bytes: int) -> list[tuple[str, str, list[tuple[str, int]]]]:
    """(repo name, its folder, [(file, size)]) for every top-level folder of every source, code files only."""
    from codemill.languages import lang_from_path

    repos = []
    for src in SOURCES:
        if not os.path.isdir(src):
            continue
        for top in sorted(os.listdir(src)):
            root = os.path.join(src, top)
            if not os.path.isdir(root) or os.path.islink(root):
                continue
            files = []
            for d, dirs, names in os.walk(root):
                dirs[:] = [x for x in sorted(dirs) if x not in SKIP]
                for n in sorted(names):
                    p = os.path.join(d, n)
                    if os.path.islink(p) or lang_from_path(p) in ("unknown", "text", "csv"):
                        continue
                    size = os.path.getsize(p)
                    if 0 < size <= max_file_bytes:
                        files.append((p, size))
            if files:
                repos.append((f"{os.path.basename(src)}__{top}", root, files))
    return repos


def build_corpus(out: Path, target_mb: float, small_mb: float) -> tuple[Path, Path, dict]:
    """Copies repositories (shuffled with a fixed seed) until `target_mb`; the first `small_mb` form the small one."""
    from codemill.languages import lang_from_path

    big, small = out / "corpus_big", out / "corpus_small"
    marker = out / "corpus.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta["target_mb"] == target_mb and meta["small_mb"] == small_mb:
            return big, small, meta
    shutil.rmtree(out, ignore_errors=True)
    # Round-robin over the sources (each shuffled with a fixed seed) so that both corpora mix all languages.
    by_source: dict[str, list] = {}
    for repo in candidate_repos(max_file_bytes=1_000_000):
        by_source.setdefault(repo[0].split("__")[0], []).append(repo)
    for i, items in enumerate(by_source.values()):
        random.Random(i).shuffle(items)
    queues = list(by_source.values())
    repos = [q[k] for k in range(max(map(len, queues))) for q in queues if k < len(q)]
    total, langs, n_files = 0, {}, 0
    small_bytes = None
    for name, root, files in repos:
        for path, size in files:
            rel = os.path.relpath(path, root)
            for dst_root in ([big] if small_bytes is not None else [big, small]):
                dst = dst_root / name / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dst)
            total += size
            n_files += 1
            lang = lang_from_path(path)
            langs[lang] = langs.get(lang, 0) + size
        if small_bytes is None and total >= small_mb * 1e6:
            small_bytes = total
        if total >= target_mb * 1e6:
            break
    meta = {"target_mb": target_mb, "small_mb": small_mb, "big_bytes": total, "small_bytes": small_bytes,
            "files": n_files, "bytes_per_lang": dict(sorted(langs.items(), key=lambda kv: -kv[1]))}
    marker.write_text(json.dumps(meta, indent=1))
    return big, small, meta


def baseline_mb_s(root: Path) -> float:
    """One Python process reading and decoding every file: the floor any ingest pays."""
    t0, n = time.perf_counter(), 0
    for d, _, names in os.walk(root):
        for name in names:
            data = open(os.path.join(d, name), "rb").read()
            data.decode("utf-8", "replace")
            n += len(data)
    return n / 1e6 / (time.perf_counter() - t0)


def run_pipeline(corpus: Path, lake: Path) -> tuple[float, dict]:
    from spark_jobs.pipeline import main

    shutil.rmtree(lake, ignore_errors=True)
    t0 = time.perf_counter()
    summary = main(["--input", str(corpus), "--lake", str(lake), "--print_funnel", "true"])
    return time.perf_counter() - t0, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--small-mb", type=float, default=50)
    ap.add_argument("--out", default=str(REPO / "bench" / "out" / "curate"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    big, small, meta = build_corpus(out, args.mb, args.small_mb)
    top = {k: round(v / 1e6, 1) for k, v in list(meta["bytes_per_lang"].items())[:10]}
    print(f"corpus: {meta['big_bytes'] / 1e6:.1f} MB, {meta['files']} files; "
          f"small: {meta['small_bytes'] / 1e6:.1f} MB; MB per language: {top}")
    base = baseline_mb_s(big)
    print(f"baseline (1 Python process read + decode): {base:.1f} MB/s")

    from codemill.session import get_spark

    cores = get_spark("codemill-bench").sparkContext.defaultParallelism
    t_small, _ = run_pipeline(small, out / "lake_small")
    t_big, summary = run_pipeline(big, out / "lake_big")
    mb_in = {}
    for row in summary.get("funnel", []):
        mb_in[row["stage"]] = mb_in.get(row["stage"], 0.0) + row["bytes_in"] / 1e6
    per_stage = {}
    for st in summary["stages"]:
        if st["status"] == "ran" and st["seconds"] > 0 and st["stage"] in mb_in:
            per_stage[st["stage"]] = round(mb_in[st["stage"]] / st["seconds"] / cores, 3)
    mb_big = meta["big_bytes"] / 1e6
    mb_small = meta["small_bytes"] / 1e6
    e2e = mb_big / t_big / cores
    growth = math.log(t_big / t_small) / math.log(mb_big / mb_small)
    print(f"cores: {cores}; time at {mb_small:.0f} MB: {t_small:.1f} s; at {mb_big:.0f} MB: {t_big:.1f} s")
    print(f"{'stage':<14} {'MB in':>8} {'s':>8} {'MB/s/core':>10} {'x baseline':>10}")
    for st in summary["stages"]:
        name = st["stage"]
        if name in per_stage:
            print(f"{name:<14} {mb_in[name]:>8.1f} {st['seconds']:>8.1f} {per_stage[name]:>10.3f} "
                  f"{per_stage[name] / base:>10.4f}")
    print(f"{'end to end':<14} {mb_big:>8.1f} {t_big:>8.1f} {e2e:>10.3f} {e2e / base:>10.4f}")
    print(f"accounting: {summary.get('accounting')}")
    result = {"end_to_end_mb_per_s_per_core": round(e2e, 3), "mb_per_s_per_core": per_stage,
              "growth_exponent": round(growth, 3), "t_small_s": round(t_small, 1), "t_big_s": round(t_big, 1),
              "mb_small": round(mb_small, 1), "mb_big": round(mb_big, 1), "cores": cores,
              "baseline_read_mb_per_s": round(base, 1)}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
