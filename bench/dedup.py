"""Near-dedup benchmark, fair: codemill vs datatrove on the same labelled corpus, at three or more sizes.

    .venv/bin/python bench/dedup.py                          # 40, 160, 640 MB (quiet machine; ~1 h on 2 cores)
    .venv/bin/python bench/dedup.py --sizes 2,4,8            # a few minutes: checks the bench works

1. Corpus (per size): Python files found on this machine (the standard library and .venv site-packages), planted
   near-duplicates (reformatting, identifier renames, comment edits, truncation, appended code) and hard negatives
   (different files given the same licence header and import block). Labels come from the *token LCS
   similarity* of a pair: 2 x |longest common subsequence| / (|a| + |b|) over the files' lexical tokens
   (identifiers, numbers and each punctuation character, case kept; `rapidfuzz.distance.Indel`). It is
   order-sensitive and counts tokens, not sets of 5-grams: neither system computes it (codemill verifies with the
   Jaccard similarity of 5-gram sets of lowercased word tokens; datatrove estimates the Jaccard similarity of
   5-gram sets of its simplified words) and tests/bench/test_bench_dedup.py checks that it differs from both.
   Variants whose label falls within 0.03 of a threshold (0.7, 0.8) are re-drawn so that labels are unambiguous.
2. codemill: `near_duplicates` at its defaults (256 permutations, 5-grams, exact verification, threshold 0.7),
   again at threshold 0.8, and again at 0.7 with `local_max_edges=0` (the distributed path, what large corpora
   run), each in a fresh Spark process (local[*]) after a warm-up on a tenth of the corpus; the timed run writes
   the deduplicated corpus (Parquet) and the cluster table to disk.
3. datatrove (in its own venv, bench/out/datatrove-venv, installed by pip on first use): its four MinHash stages
   (signatures, buckets, clusters, filter) writing the deduplicated corpus as JSON Lines, at its defaults
   (`MinhashConfig()`: 14 buckets x 8 hashes, 5-grams) and at codemill's banding (bands x rows of threshold 0.7),
   one worker, after a warm-up run of the same pipeline on a tenth of the corpus in the same process.
4. Reports precision, recall and F1 on the labelled pairs at 0.7 and 0.8 (datatrove has no threshold of its own:
   its runs are scored against both), CPU-seconds per MB (the whole process tree: JVM, Python workers) and wall
   seconds per MB, peak memory (RSS of the process tree) of every run, per size; then the growth of CPU time over
   the sizes (log-log slope) and the marginal CPU-seconds per MB (fixed + marginal x MB, least squares). Ends with
   `RESULT {json}`: `sizes` holds, per size, `f1`, `datatrove_f1` (codemill's banding), `datatrove_defaults_f1`,
   `speedup_vs_datatrove` and `speedup_vs_datatrove_defaults` (datatrove's CPU-s per MB / codemill's).
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
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sysconfig  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "dedup"
DT_VENV = ROOT / "bench" / "out" / "datatrove-venv"
THRESHOLDS = (0.7, 0.8)
MARGIN = 0.03  # labels this close to a threshold are re-drawn
NGRAM = 5
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
_LEXICAL = re.compile(r"\w+|[^\w\s]")


def lexical_tokens(text: str) -> list[str]:
    """Identifiers, numbers and every punctuation character, in order, case kept."""
    return _LEXICAL.findall(text)


def label_similarity(a: str, b: str) -> float:
    """Token LCS similarity: 2 x |LCS| / (|a| + |b|) of the lexical token sequences (1 - normalised Indel
    distance, computed bit-parallel by rapidfuzz). Neither dedup system computes it."""
    from rapidfuzz.distance import Indel

    ta, tb = lexical_tokens(a), lexical_tokens(b)
    if not ta or not tb:
        return 0.0
    return Indel.normalized_similarity(ta, tb)


def _ambiguous(sim: float) -> bool:
    return any(abs(sim - t) <= MARGIN for t in THRESHOLDS)


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
    """(docs [{doc_id, content, stars, size_bytes}], labelled pairs [(a, b, label_similarity)])."""
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
            jac = label_similarity(base[i], variant)
            if not _ambiguous(jac) and variant != base[i]:
                break
        else:
            continue
        vid = f"v{j:06d}"
        docs.append({"doc_id": vid, "content": variant})
        pairs.append((f"f{i:06d}", vid, jac))
    for k in range(len(base) // 10):  # hard negatives: two different files with the same licence + imports
        a, b = rng.sample(range(len(base)), 2)
        ta, tb = LICENCE + base[a], LICENCE + base[b]
        jac = label_similarity(ta, tb)
        if jac >= min(THRESHOLDS) - MARGIN:
            continue
        docs.append({"doc_id": f"h{k:06d}a", "content": ta})
        docs.append({"doc_id": f"h{k:06d}b", "content": tb})
        pairs.append((f"h{k:06d}a", f"h{k:06d}b", jac))
    for d in docs:
        d["size_bytes"] = len(d["content"].encode())
        d["stars"] = 0
    return docs, pairs


def evaluate(assign: dict[str, object], pairs, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 of "same cluster" against "label similarity >= threshold" over the labelled pairs."""
    tp = fp = fn = 0
    for a, b, sim in pairs:
        same = a in assign and b in assign and assign[a] == assign[b]
        truth = sim >= threshold
        tp += same and truth
        fp += same and not truth
        fn += truth and not same
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}


# ------------------------------------------------------------------------------------------------ measuring
class TreeMonitor:
    """Samples RSS of a process tree every 50 ms: peak total, peak of the root, and peak of the driver (the root
    plus its direct JVM child: with a cluster master, executors are the JVM's children and are left out)."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak_total = self.peak_root = self.peak_driver = 0
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
                jvms = [p.pid for p in procs if p.ppid() == self.root.pid and "java" in p.name()]
                self.peak_driver = max(self.peak_driver, rss.get(self.root.pid, 0) + sum(rss.get(j, 0) for j in jvms))
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


def run_worker(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Runs `cmd`, whose last stdout line is a JSON object, and adds the peak RSS of its process tree and of its
    driver (the process and its JVM)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    mon = TreeMonitor(proc.pid)
    out, err = proc.communicate()
    mon.stop()
    if proc.returncode != 0:
        sys.stderr.write(err[-4000:])
        raise SystemExit(f"worker failed: {' '.join(cmd)}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = mon.peak_total / 2**20
    result["driver_rss_mb"] = mon.peak_driver / 2**20
    return result




# ------------------------------------------------------------------------------------------------ codemill
def codemill_worker(corpus: Path, out: Path, threshold: float, local_max_edges: int) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("CODEMILL_SPARK_LOG_LEVEL", "ERROR")
    from pyspark.sql import functions as F

    from codemill.session import get_spark
    from spark_jobs.near_dedup import NearDedupConfig, near_duplicates

    spark = get_spark("bench-dedup", conf={"spark.driver.memory": "2g"})
    cores = spark.sparkContext.defaultParallelism
    df = spark.read.parquet(str(corpus))
    mb = df.select(F.sum("size_bytes")).first()[0] / 1e6
    n_docs = df.count()
    cfg = NearDedupConfig(threshold=threshold, local_max_edges=local_max_edges,
                          keep=["stars desc", "size_bytes desc", "doc_id asc"])

    def run(frame, dest: Path):
        kept, clusters = near_duplicates(frame, cfg)
        # The deduplicated corpus and the clusters, written from the executors: the output datatrove writes too.
        kept.write.mode("overwrite").parquet(str(dest / "kept"))
        clusters.select("doc_id", "cluster_id").write.mode("overwrite").parquet(str(dest / "clusters"))

    # Warm-up: JVM JIT, query code generation and Python worker start-up are one-off costs per session, not per
    # MB. The sample must take every code path of a real run (candidates on both sides of the verification
    # margin, a components round, representatives), or those costs land in the timed run: files grouped by
    # their first 200 characters keep a planted variant next to its original and licence-sharing files together.
    run(df.where(F.pmod(F.xxhash64(F.substring("content", 1, 200)), F.lit(10)) == 0), out / "warm-up")
    spark.sparkContext.setJobGroup("timed", "the timed run")
    cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
    run(df, out)
    wall, cpu = time.perf_counter() - t0, tree_cpu_seconds() - cpu0
    jobs = len(spark.sparkContext.statusTracker().getJobIdsForGroup("timed"))
    n_kept = spark.read.parquet(str(out / "kept")).count()
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "cores": cores, "mb": mb, "docs": n_docs, "kept": n_kept,
                      "spark_jobs": jobs}))


def run_codemill(corpus: Path, work: Path, *, threshold: float, local_max_edges: int) -> dict:
    import pyarrow.parquet as pq

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    res = run_worker([sys.executable, __file__, "--worker", "codemill", "--corpus", str(corpus), "--out", str(work),
                      "--threshold", str(threshold), "--local-max-edges", str(local_max_edges)])
    tbl = pq.read_table(work / "clusters")
    res["assign"] = dict(zip(tbl.column("doc_id").to_pylist(), tbl.column("cluster_id").to_pylist()))
    return res


# ------------------------------------------------------------------------------------------------ datatrove
DT_MINHASH = r'''
import json, resource, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                              MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

def pipeline(base, cfg, after=(), source=None):
    # datatrove's four MinHash stages over `source` (default base/input); `after`: steps between the last one's
    # filter and its writer.
    source = source or f"{base}/input"
    common = dict(logging_dir=f"{base}/logs", skip_completed=False)  # datatrove defaults to ./logs
    LocalPipelineExecutor(pipeline=[JsonlReader(source, compression=None),
                                    MinhashDedupSignature(output_folder=f"{base}/sigs", config=cfg)],
                          tasks=1, workers=1, **common).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=f"{base}/sigs",
                                                        output_folder=f"{base}/buckets", config=cfg)],
                          tasks=cfg.num_buckets, workers=1, **common).run()
    LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=f"{base}/buckets",
                                                        output_folder=f"{base}/remove", config=cfg,
                                                        save_cluster_id=True)], tasks=1, workers=1, **common).run()
    LocalPipelineExecutor(pipeline=[JsonlReader(source, compression=None),
                                    MinhashDedupFilter(input_folder=f"{base}/remove", load_cluster_ids=True,
                                                       exclusion_writer=JsonlWriter(f"{base}/removed",
                                                                                    compression=None)),
                                    *after, JsonlWriter(f"{base}/kept", compression=None)], tasks=1, workers=1,
                          **common).run()
'''

DT_SCRIPT = DT_MINHASH + r'''
work, warm, bands, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
# "default": MinhashConfig() as datatrove ships it (5-grams, 14 buckets x 8 hashes, 64-bit xxhash); language and
# word tokenizer: MinhashDedupSignature's defaults too (English, spaCy's blank tokenizer).
cfg = MinhashConfig() if bands == "default" else MinhashConfig(num_buckets=int(bands), hashes_per_bucket=int(rows))

pipeline(warm, cfg)  # warm-up outside the timed run: imports, tokenizer and hash set-up, as codemill's warm-up
c0, t0 = cpu(), time.perf_counter()
pipeline(work, cfg)
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0, "cores": 1,
                  "config": str(cfg)}))
'''


def ensure_datatrove() -> Path:
    """datatrove in its own venv (never .venv): its MinHash stages need xxhash and its English word tokenizer
    spaCy (the blank English tokenizer, no model download); importing its dedup package needs tokenizers."""
    py = DT_VENV / "bin" / "python"
    check = "import datatrove.pipeline.dedup.minhash, datatrove.pipeline.decont, xxhash, spacy, psutil; " \
            "from datatrove.utils.word_tokenizers import load_word_tokenizer; " \
            "load_word_tokenizer('eng').word_tokenize('a b')"
    if py.exists() and subprocess.run([str(py), "-c", check], capture_output=True).returncode == 0:
        return py
    print("installing datatrove into", DT_VENV, flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DT_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "datatrove==0.10.*", "xxhash<4", "spacy>=3.7,<4",
                    "tokenizers", "orjson", "psutil"], check=True)
    return py


def write_jsonl_input(docs: list[dict], folder: Path) -> None:
    folder.mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"id": d["doc_id"], "text": d["content"]}) + "\n")


def run_datatrove(docs: list[dict], work: Path, *, bands: int | None, rows: int | None) -> dict:
    py = ensure_datatrove()
    shutil.rmtree(work, ignore_errors=True)
    write_jsonl_input(docs, work / "input")
    write_jsonl_input([d for d in docs if int(hashlib.sha1(d["content"][:200].encode()).hexdigest(), 16) % 10 == 0],
                      work / "warm-up" / "input")
    (work / "run.py").write_text(DT_SCRIPT)
    env = {**os.environ, "DATATROVE_COLORIZE_LOGS": "0", "LOGURU_LEVEL": "WARNING"}
    res = run_worker([str(py), str(work / "run.py"), str(work), str(work / "warm-up"),
                      "default" if bands is None else str(bands), "0" if rows is None else str(rows)], env=env)
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


# ------------------------------------------------------------------------------------------------ fits
def fit(mb: list[float], cost: list[float]) -> dict:
    """cost = fixed + marginal x MB (least squares) and the log-log growth exponent, over every size."""
    n = len(mb)
    mx, my = sum(mb) / n, sum(cost) / n
    sxx = sum((x - mx) ** 2 for x in mb)
    marginal = sum((x - mx) * (y - my) for x, y in zip(mb, cost)) / sxx if sxx else float("nan")
    lx, ly = [math.log(x) for x in mb], [math.log(max(y, 1e-9)) for y in cost]
    lmx, lmy = sum(lx) / n, sum(ly) / n
    lsxx = sum((x - lmx) ** 2 for x in lx)
    growth = sum((x - lmx) * (y - lmy) for x, y in zip(lx, ly)) / lsxx if lsxx else float("nan")
    return {"fixed_s": my - marginal * mx, "marginal_s_per_mb": marginal, "growth_exponent": growth}


# ------------------------------------------------------------------------------------------------ main
def _figures(res: dict, pairs, thresholds=THRESHOLDS) -> dict:
    out = {"mb": round(res["mb"], 3), "cpu_s": round(res["cpu_s"], 2), "wall_s": round(res["wall_s"], 2),
           "cores": res["cores"], "cpu_s_per_mb": round(res["cpu_s"] / res["mb"], 4),
           "wall_s_per_mb": round(res["wall_s"] / res["mb"], 4), "peak_rss_mb": round(res["peak_rss_mb"]),
           "driver_rss_mb": round(res["driver_rss_mb"])}
    for t in thresholds:
        ev = evaluate(res["assign"], pairs, t)
        key = str(t).replace(".", "p")
        out.update({f"precision_{key}": round(ev["precision"], 4), f"recall_{key}": round(ev["recall"], 4),
                    f"f1_{key}": round(ev["f1"], 4)})
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="40,160,640", help="corpus sizes in MB, comma-separated (three or more)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--worker", choices=["codemill"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--threshold", type=float, default=0.7, help=argparse.SUPPRESS)
    ap.add_argument("--local-max-edges", type=int, default=50_000, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        codemill_worker(Path(args.corpus), Path(args.out), args.threshold, args.local_max_edges)
        return {}
    sizes = sorted(float(x) for x in args.sizes.split(","))
    if len(sizes) < 3:
        raise SystemExit("--sizes: three or more sizes are needed to fit fixed + marginal cost")
    sys.path.insert(0, str(ROOT))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spark_jobs.near_dedup import NearDedupConfig

    cm_bands, cm_rows = NearDedupConfig().band_params()
    per_size, runs = [], {}
    for size in sizes:
        t = time.perf_counter()
        docs, pairs = build_corpus(int(size * 1e6), args.seed)
        work = OUT / f"{size:g}mb"
        work.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(docs), work / "corpus.parquet", row_group_size=500)
        counts = {t_: sum(s >= t_ for _, _, s in pairs) for t_ in THRESHOLDS}
        print(f"{size:g} MB: {len(docs)} files, {sum(d['size_bytes'] for d in docs) / 1e6:.1f} MB, {len(pairs)} "
              f"labelled pairs ({counts[0.7]} >= 0.7, {counts[0.8]} >= 0.8 by token LCS similarity); built in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        row = {}
        for name, threshold, lme in (("codemill", 0.7, 50_000), ("codemill_0p8", 0.8, 50_000),
                                     ("codemill_distributed", 0.7, 0)):
            res = run_codemill(work / "corpus.parquet", work / name, threshold=threshold, local_max_edges=lme)
            row[name] = {**_figures(res, pairs), "spark_jobs": res["spark_jobs"], "kept": res["kept"]}
            runs.setdefault(name, []).append(res)
            print(f"  {name}: {json.dumps(row[name])}", flush=True)
        if not args.skip_datatrove:
            for name, bands, rows in (("datatrove", cm_bands, cm_rows), ("datatrove_defaults", None, None)):
                res = run_datatrove(docs, work / name, bands=bands, rows=rows)
                row[name] = {**_figures(res, pairs), "config": res["config"]}
                runs.setdefault(name, []).append(res)
                print(f"  {name}: {json.dumps(row[name])}", flush=True)
        cm = row["codemill"]
        summary = {"mb": cm["mb"], "f1": cm["f1_0p7"], "f1_0p8": row["codemill_0p8"]["f1_0p8"],
                   "f1_distributed": row["codemill_distributed"]["f1_0p7"], "runs": row}
        if not args.skip_datatrove:
            summary.update({
                "datatrove_f1": row["datatrove"]["f1_0p7"], "datatrove_f1_0p8": row["datatrove"]["f1_0p8"],
                "datatrove_defaults_f1": row["datatrove_defaults"]["f1_0p7"],
                "datatrove_defaults_f1_0p8": row["datatrove_defaults"]["f1_0p8"],
                "speedup_vs_datatrove": round(row["datatrove"]["cpu_s_per_mb"] / cm["cpu_s_per_mb"], 3),
                "speedup_vs_datatrove_defaults": round(row["datatrove_defaults"]["cpu_s_per_mb"]
                                                       / cm["cpu_s_per_mb"], 3),
                "wall_speedup_vs_datatrove": round(row["datatrove"]["wall_s_per_mb"] / cm["wall_s_per_mb"], 3)})
        per_size.append(summary)
    fits = {name: {k: round(v, 4) for k, v in fit([r["mb"] for r in rs], [r["cpu_s"] for r in rs]).items()}
            for name, rs in runs.items()}
    for name, f in fits.items():
        print(f"{name}: CPU-s = {f['fixed_s']:.1f} + {f['marginal_s_per_mb']:.3f} x MB; growth exponent "
              f"{f['growth_exponent']:.2f}", flush=True)
    result = {"sizes": per_size, "fits": fits, "label": "token LCS similarity (rapidfuzz Indel over lexical tokens)",
              "codemill_bands": [cm_bands, cm_rows], "growth_exponent": fits["codemill"]["growth_exponent"],
              "marginal_cpu_s_per_mb": fits["codemill"]["marginal_s_per_mb"]}
    if not args.skip_datatrove:
        result["marginal_speedup_vs_datatrove"] = round(
            fits["datatrove"]["marginal_s_per_mb"] / fits["codemill"]["marginal_s_per_mb"], 3)
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
