"""Near-dedup benchmark: codemill's MinHash LSH vs datatrove's MinHash dedup on real code with planted duplicates.

    .venv/bin/python bench/dedup.py                 # ~40 + 170 MB corpora (~2 min on 2 quiet cores); make bench-dedup
    .venv/bin/python bench/dedup.py --mb 8 --small-mb 2   # smaller/faster

1. Builds a labelled corpus from the Python files on this machine (the standard library and .venv site-packages):
   base files, planted near-duplicates (reformatting, identifier renames, comment edits, truncation, appended
   code) and hard negatives (pairs of different files given the same licence header and import block). Each
   labelled pair carries its true Jaccard similarity on word 5-grams (lowercased \\w+ tokens, a definition neither
   system uses internally); variants whose true Jaccard falls within 0.08 of the threshold are re-drawn so that
   labels are unambiguous.
2. Runs codemill (`near_duplicates`, Spark local, defaults: 256 permutations, 5-grams, threshold 0.7, exact
   verification) at the full size and at a quarter of it (growth exponent, driver memory), each in a fresh
   process, after a warm-up run on a tenth of the corpus. Spark's fixed costs per run (job scheduling, query
   planning, the JIT compiling code that gets hot) are seconds: sizes of tens of MB are needed before the figures
   describe the per-MB cost. The number of Spark jobs of the timed run is printed too.
3. Installs datatrove into bench/out/datatrove-venv (a separate venv; never .venv) and runs its four MinHash stages
   (signatures, buckets, clusters, filter) on the same two corpora with 5-grams and bands x rows chosen for the
   same threshold from its default budget of 112 hashes, one process/core.
4. Prints precision/recall/F1 on the labelled pairs, MB/s per core (MB over CPU-seconds of the whole process tree,
   robust on a shared machine; wall-clock figures are printed too), peak memory, and ends with one RESULT line.
"""

from __future__ import annotations

import os
import sys

# bench/ holds scripts named like stdlib modules (tokenize.py): never import from the script's own folder.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import argparse  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sysconfig  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "dedup"
DT_VENV = ROOT / "bench" / "out" / "datatrove-venv"
THRESHOLD = 0.7
NGRAM = 5
DT_HASHES = 112  # datatrove's default budget: 14 buckets x 8 hashes
LICENCE = """# Copyright (c) 2019-2024 The Example Project Developers. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
from __future__ import annotations

import os
import sys
import json
import logging
import functools
from typing import Any, Dict, List, Optional, Tuple
from collections import defaultdict, OrderedDict

logger = logging.getLogger(__name__)
"""


# ------------------------------------------------------------------------------------------------ corpus
def word_shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < NGRAM:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def true_jaccard(a: str, b: str) -> float:
    sa, sb = word_shingles(a), word_shingles(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


def source_files(limit_bytes: int, seed: int) -> list[str]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), ROOT / ".venv" / "lib"]
    paths = sorted({p for r in roots for p in r.rglob("*.py") if "test" not in p.name.lower()})
    random.Random(seed).shuffle(paths)
    seen, out, total = set(), [], 0
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        size = len(text.encode())
        digest = hashlib.sha1(text.encode()).digest()
        if not 2_000 <= size <= 60_000 or digest in seen:
            continue
        seen.add(digest)
        out.append(text)
        total += size
        if total >= limit_bytes:
            break
    return out


def mutate(text: str, kind: str, strength: float, rng: random.Random, donor: str) -> str:
    lines = text.splitlines()
    if kind == "reformat":  # re-indent, re-space operators and commas: token-identical, whitespace differs
        out = [" " * ((len(ln) - len(ln.lstrip(" "))) // 2) + ln.lstrip(" ") for ln in lines]
        return "\n".join(out).replace(", ", " , ").replace(" = ", "=") + "\n"
    if kind == "rename":  # rename the most frequent identifiers, as a refactoring would
        words = re.findall(r"\b[a-z_][a-z0-9_]{3,}\b", text)
        common = sorted(set(words), key=lambda w: (-words.count(w), w))[: max(1, int(strength * 12))]
        for w in common:
            text = re.sub(rf"\b{w}\b", w + "_v2", text)
        return text
    if kind == "comments":  # add and edit comments
        out = []
        for ln in lines:
            if rng.random() < strength * 0.5:
                out.append("# NOTE: " + " ".join(rng.choice(["check", "fix", "slow", "why"]) for _ in range(4)))
            out.append(ln.split("#")[0].rstrip() if rng.random() < strength and "#" in ln else ln)
        return "\n".join(out)
    if kind == "truncate":
        return "\n".join(lines[: max(1, int(len(lines) * (1 - strength * 0.6)))])
    # append: code from another file
    extra = donor.splitlines()
    return text + "\n" + "\n".join(extra[: int(len(lines) * strength * 0.8)])


def build_corpus(total_bytes: int, seed: int = 0) -> tuple[list[dict], list[tuple[str, str, float]]]:
    """(docs [{doc_id, content, stars, size_bytes}], labelled pairs [(a, b, true_jaccard)])."""
    rng = random.Random(seed)
    base = source_files(int(total_bytes * 0.75), seed)
    docs, pairs = [], []
    for i, text in enumerate(base):
        docs.append({"doc_id": f"f{i:06d}", "content": text})
    kinds = ["reformat", "rename", "comments", "truncate", "append"]
    n_planted = len(base) // 5
    for j in range(n_planted):
        i = rng.randrange(len(base))
        kind = kinds[j % len(kinds)]
        for _ in range(8):  # re-draw ambiguous strengths
            variant = mutate(base[i], kind, rng.random() ** 2, rng, base[rng.randrange(len(base))])
            jac = true_jaccard(base[i], variant)
            if abs(jac - THRESHOLD) > 0.08 and variant != base[i]:
                break
        else:
            continue
        vid = f"v{j:06d}"
        docs.append({"doc_id": vid, "content": variant})
        pairs.append((f"f{i:06d}", vid, jac))
    for k in range(len(base) // 10):  # hard negatives: two different files with the same licence + imports
        a, b = rng.sample(range(len(base)), 2)
        ta, tb = LICENCE + base[a], LICENCE + base[b]
        jac = true_jaccard(ta, tb)
        if jac >= THRESHOLD - 0.08:
            continue
        docs.append({"doc_id": f"h{k:06d}a", "content": ta})
        docs.append({"doc_id": f"h{k:06d}b", "content": tb})
        pairs.append((f"h{k:06d}a", f"h{k:06d}b", jac))
    for d in docs:
        d["size_bytes"] = len(d["content"].encode())
        d["stars"] = 0
    return docs, pairs


def evaluate(assign: dict[str, object], pairs) -> dict[str, float]:
    tp = fp = fn = 0
    for a, b, jac in pairs:
        same = a in assign and b in assign and assign[a] == assign[b]
        truth = jac >= THRESHOLD
        tp += same and truth
        fp += same and not truth
        fn += truth and not same
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}


# ------------------------------------------------------------------------------------------------ measuring
class TreeMonitor:
    """Samples RSS of a process tree (peak total, peak of the root) and its CPU seconds, every 50 ms."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak_total = self.peak_root = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
                rss = {}
                for p in procs:
                    try:
                        rss[p.pid] = p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_total = max(self.peak_total, sum(rss.values()))
                self.peak_root = max(self.peak_root, rss.get(self.root.pid, 0))
            except psutil.Error:
                pass
            self._stop.wait(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join()


def tree_cpu_seconds() -> float:
    """CPU seconds of this process and all its live descendants (and their reaped children)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def run_worker(cmd: list[str], env: dict | None = None) -> dict:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    mon = TreeMonitor(proc.pid)
    out, err = proc.communicate()
    mon.stop()
    if proc.returncode != 0:
        sys.stderr.write(err[-4000:])
        raise SystemExit(f"worker failed: {' '.join(cmd)}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = mon.peak_total / 2**20
    result["driver_rss_mb"] = mon.peak_root / 2**20
    return result


# ------------------------------------------------------------------------------------------------ codemill
def codemill_worker(corpus: Path, out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("CODEMILL_SPARK_LOG_LEVEL", "ERROR")
    from pyspark.sql import functions as F

    from codemill.session import get_spark
    from spark_jobs.near_dedup import near_duplicates

    spark = get_spark("bench-dedup", conf={"spark.driver.memory": "2g"})
    cores = spark.sparkContext.defaultParallelism
    df = spark.read.parquet(str(corpus))
    # Warm-up: JVM JIT, query code generation and Python worker start-up are one-off costs per session, not per
    # MB. The sample must take every code path of a real run (candidates on both sides of the verification
    # margin, a components round, representatives), or those costs land in the timed run: files grouped by
    # their first 200 characters keep a planted variant next to its original and licence-sharing files together.
    sample = df.where(F.pmod(F.xxhash64(F.substring("content", 1, 200)), F.lit(10)) == 0)
    warm_kept, warm_clusters = near_duplicates(sample, keep=["stars desc", "size_bytes desc", "doc_id asc"])
    warm_kept.count()
    warm_clusters.select("doc_id", "cluster_id").write.mode("overwrite").parquet(str(out / "warm-up"))
    spark.sparkContext.setJobGroup("timed", "the timed run")
    cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
    kept, clusters = near_duplicates(df, keep=["stars desc", "size_bytes desc", "doc_id asc"])
    n_kept = kept.count()
    # Write the assignment to a file from the executors: nothing scales with the corpus on the driver.
    clusters.select("doc_id", "cluster_id").write.mode("overwrite").parquet(str(out / "clusters"))
    wall = time.perf_counter() - t0
    cpu = tree_cpu_seconds() - cpu0
    jobs = len(spark.sparkContext.statusTracker().getJobIdsForGroup("timed"))
    n_docs = df.count()
    mb = df.select(F.sum("size_bytes")).first()[0] / 1e6
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "cores": cores, "mb": mb, "docs": n_docs, "kept": n_kept,
                      "spark_jobs": jobs}))


def run_codemill(docs: list[dict], tag: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = OUT / f"codemill-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(docs), work / "corpus.parquet", row_group_size=500)
    res = run_worker([sys.executable, __file__, "--worker", "codemill", "--corpus", str(work / "corpus.parquet"),
                      "--out", str(work)])
    import pyarrow.parquet as pq2

    tbl = pq2.read_table(work / "clusters")
    res["assign"] = dict(zip(tbl.column("doc_id").to_pylist(), tbl.column("cluster_id").to_pylist()))
    return res


# ------------------------------------------------------------------------------------------------ datatrove
DT_SCRIPT = r'''
import json, resource, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                              MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer

class SplitTokenizer(WordTokenizer):
    """English would load spaCy (not installed; needs model downloads), and datatrove's WhitespaceTokenizer
    delegates word splitting to spaCy too. simplify_text already lowercases and strips punctuation, so splitting
    on whitespace gives the word tokens."""
    def word_tokenize(self, text):
        return text.split()
    def sent_tokenize(self, text):
        return [text]
    def span_tokenize(self, text):
        return [(0, len(text))]

work, bands, rows, ngram = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = MinhashConfig(n_grams=ngram, num_buckets=bands, hashes_per_bucket=rows, hash_config=HashConfig(precision=64))
tok = SplitTokenizer()
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
c0, t0 = cpu(), time.perf_counter()
common = dict(logging_dir=f"{work}/logs", skip_completed=False)  # datatrove defaults to ./logs
LocalPipelineExecutor(pipeline=[JsonlReader(f"{work}/input", compression=None),
                                MinhashDedupSignature(output_folder=f"{work}/sigs", config=cfg, language=tok)],
                      tasks=1, workers=1, **common).run()
LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets",
                                                    config=cfg)], tasks=bands, workers=1, **common).run()
LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove",
                                                    config=cfg, save_cluster_id=True)], tasks=1, workers=1,
                      **common).run()
LocalPipelineExecutor(pipeline=[JsonlReader(f"{work}/input", compression=None),
                                MinhashDedupFilter(input_folder=f"{work}/remove", load_cluster_ids=True,
                                                   exclusion_writer=JsonlWriter(f"{work}/removed", compression=None)),
                                JsonlWriter(f"{work}/kept", compression=None)], tasks=1, workers=1, **common).run()
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0, "cores": 1}))
'''


def ensure_datatrove() -> Path:
    py = DT_VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import datatrove, xxhash, regex, tokenizers"],
                                      capture_output=True).returncode == 0:
        return py
    print("installing datatrove into", DT_VENV, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(DT_VENV)], check=True)
    # datatrove's MinHash needs xxhash and regex (its 'processing' extra, minus the NLP models) and tokenizers.
    subprocess.run([str(py), "-m", "pip", "install", "-q", "datatrove", "xxhash<4", "regex", "tokenizers", "orjson"],
                   check=True)
    return py


def run_datatrove(docs: list[dict], bands: int, rows: int, tag: str) -> dict:
    import shutil

    py = ensure_datatrove()
    work = OUT / f"datatrove-{tag}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "input").mkdir(parents=True)
    with open(work / "input" / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"id": d["doc_id"], "text": d["content"]}) + "\n")
    (work / "run.py").write_text(DT_SCRIPT)
    env = {**os.environ, "DATATROVE_COLORIZE_LOGS": "0", "LOGURU_LEVEL": "WARNING"}
    res = run_worker([str(py), str(work / "run.py"), str(work), str(bands), str(rows), str(NGRAM)], env=env)
    assign = {}
    for sub in ("kept", "removed"):
        for path in (work / sub).glob("*.jsonl*"):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt") as f:
                for line in f:
                    rec = json.loads(line)
                    cid = rec.get("metadata", {}).get("minhash_cluster_id", -1)
                    if cid != -1:
                        assign[rec["id"]] = cid
    res["assign"] = assign
    res["mb"] = sum(d["size_bytes"] for d in docs) / 1e6
    return res


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=160.0, help="full corpus size in MB")
    ap.add_argument("--small-mb", type=float, default=None, help="second, smaller size timed (default: mb / 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--worker", choices=["codemill"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        codemill_worker(Path(args.corpus), Path(args.out))
        return {}
    sys.path.insert(0, str(ROOT))
    from spark_jobs.minhash import optimal_bands
    from spark_jobs.near_dedup import NearDedupConfig

    OUT.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    docs, pairs = build_corpus(int(args.mb * 1e6), args.seed)
    half, half_pairs = build_corpus(int((args.small_mb or args.mb / 4) * 1e6), args.seed)
    n_pos = sum(j >= THRESHOLD for _, _, j in pairs)
    print(f"corpus: {len(docs)} files, {sum(d['size_bytes'] for d in docs) / 1e6:.1f} MB, {len(pairs)} labelled "
          f"pairs ({n_pos} near-duplicates >= {THRESHOLD}, {len(pairs) - n_pos} below: planted variants and "
          f"licence/import hard negatives); built in {time.perf_counter() - t:.0f} s", flush=True)

    cfg = NearDedupConfig()
    print(f"codemill: num_perm={cfg.num_perm} ngram={cfg.ngram} threshold={cfg.threshold} bands x rows="
          f"{cfg.band_params()} verify={cfg.verify}", flush=True)
    small = run_codemill(half, "small")
    full = run_codemill(docs, "full")
    for name, res in (("small", small), ("full", full)):
        print(f"  {name}: {res['mb']:.1f} MB {res['docs']} files -> {res['kept']} kept; wall {res['wall_s']:.1f} s, "
              f"CPU {res['cpu_s']:.1f} s on {res['cores']} cores, {res['spark_jobs']} Spark jobs; peak RSS "
              f"{res['peak_rss_mb']:.0f} MB (driver python {res['driver_rss_mb']:.0f} MB)", flush=True)
    growth = math.log(full["cpu_s"] / small["cpu_s"]) / math.log(full["mb"] / small["mb"])
    wall_growth = math.log(full["wall_s"] / small["wall_s"]) / math.log(full["mb"] / small["mb"])
    ev = evaluate(full["assign"], pairs)
    mbps = full["mb"] / full["cpu_s"]
    # Cost of one more MB (slope between the two sizes): what a corpus much larger than this one pays.
    marginal = (full["mb"] - small["mb"]) / max(full["cpu_s"] - small["cpu_s"], 1e-9)
    print(f"  growth exponent (CPU) {growth:.2f}, (wall) {wall_growth:.2f}; marginal {marginal:.2f} MB/s per core; "
          f"driver python RSS small/full {small['driver_rss_mb']:.0f}/{full['driver_rss_mb']:.0f} MB, whole tree "
          f"{small['peak_rss_mb']:.0f}/{full['peak_rss_mb']:.0f} MB", flush=True)
    print(f"  precision {ev['precision']:.3f} recall {ev['recall']:.3f} F1 {ev['f1']:.3f} "
          f"(tp {ev['tp']} fp {ev['fp']} fn {ev['fn']}); {mbps:.2f} MB/s per core "
          f"(wall-clock: {full['mb'] / full['wall_s'] / full['cores']:.2f})", flush=True)

    result = {"f1": round(ev["f1"], 4), "datatrove_f1": None, "mb_per_s_per_core": round(mbps, 3),
              "datatrove_mb_per_s_per_core": None, "speedup_vs_datatrove": None, "growth_exponent": round(growth, 3),
              "marginal_mb_per_s_per_core": round(marginal, 3),
              "wall_mb_per_s_per_core": round(full["mb"] / full["wall_s"] / full["cores"], 3),
              "precision": round(ev["precision"], 4), "recall": round(ev["recall"], 4),
              "peak_rss_mb": round(full["peak_rss_mb"]), "corpus_mb": round(full["mb"], 2)}
    if not args.skip_datatrove:
        bands, rows = optimal_bands(THRESHOLD, DT_HASHES)
        print(f"datatrove: {bands} buckets x {rows} hashes (threshold {THRESHOLD} from {DT_HASHES} hashes), "
              f"{NGRAM}-grams", flush=True)
        dt_small = run_datatrove(half, bands, rows, "small")
        dt = run_datatrove(docs, bands, rows, "full")
        dev = evaluate(dt["assign"], pairs)
        dmbps = dt["mb"] / dt["cpu_s"]
        dmbps_small = dt_small["mb"] / dt_small["cpu_s"]
        small_speedup = (small["mb"] / small["cpu_s"]) / dmbps_small
        dt_marginal = (dt["mb"] - dt_small["mb"]) / max(dt["cpu_s"] - dt_small["cpu_s"], 1e-9)
        print(f"  small: {dt_small['mb']:.1f} MB, CPU {dt_small['cpu_s']:.1f} s ({dmbps_small:.2f} MB/s per core)",
              flush=True)
        print(f"  full: wall {dt['wall_s']:.1f} s, CPU {dt['cpu_s']:.1f} s on 1 core; peak RSS "
              f"{dt['peak_rss_mb']:.0f} MB", flush=True)
        print(f"  precision {dev['precision']:.3f} recall {dev['recall']:.3f} F1 {dev['f1']:.3f} "
              f"(tp {dev['tp']} fp {dev['fp']} fn {dev['fn']}); {dmbps:.2f} MB/s per core", flush=True)
        print(f"codemill vs datatrove: F1 {ev['f1']:.3f} vs {dev['f1']:.3f}; MB/s per core {mbps:.2f} vs "
              f"{dmbps:.2f} = {mbps / dmbps:.2f}x at {full['mb']:.0f} MB ({small_speedup:.2f}x at "
              f"{small['mb']:.0f} MB); peak RSS {full['peak_rss_mb']:.0f} vs {dt['peak_rss_mb']:.0f} MB")
        result.update({"datatrove_f1": round(dev["f1"], 4), "datatrove_mb_per_s_per_core": round(dmbps, 3),
                       "speedup_vs_datatrove": round(mbps / dmbps, 3),
                       "speedup_vs_datatrove_small": round(small_speedup, 3),
                       "datatrove_marginal_mb_per_s_per_core": round(dt_marginal, 3),
                       "marginal_speedup_vs_datatrove": round(marginal / dt_marginal, 3),
                       "datatrove_peak_rss_mb": round(dt["peak_rss_mb"]),
                       "datatrove_wall_mb_per_s_per_core": round(dt["mb"] / dt["wall_s"], 3),
                       "wall_speedup_vs_datatrove": round(full["mb"] / full["wall_s"] / full["cores"]
                                                          / (dt["mb"] / dt["wall_s"]), 3)})
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
