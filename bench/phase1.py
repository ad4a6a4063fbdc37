"""Phase 1 end to end, fair: codemill's pipeline vs datatrove's equivalent on the same labelled corpus, one run.

    .venv/bin/python -m bench.phase1                  # 40 and 160 MB (quiet machine)
    .venv/bin/python -m bench.phase1 --sizes 2        # ~5 minutes on 2 cores: checks the bench works

1. Corpus (per size, one JSON Lines file both systems read, `{id, repo, path, text}`): bench/dedup.py's corpus
   (Python files of this machine, planted near-duplicates and hard negatives labelled by token LCS similarity,
   a definition neither system computes) plus exact copies of 3% of its files, files the StarCoder heuristics
   reject (2%: a line of 3,000+ characters, a base64 blob, a "Code generated ... DO NOT EDIT" header, each
   synthetic and unique) and planted benchmark copies (1 file in 40: a real file of this machine that is not
   otherwise in the corpus with a HumanEval prompt + solution or an MBPP description + solution appended).
2. codemill: `python -m spark_jobs.pipeline --stages ingest,filter,exact_dedup,near_dedup,decontaminate` at the
   defaults of conf/spark/pipeline.yaml (licences and redaction off: datatrove has neither, and the corpus has no
   licence fields), tables written as Delta; a warm-up run on a tenth of the corpus in its own process first
   (the benchmark index's disk cache, the OS file cache), then the timed run in a fresh process, Spark's
   start-up included.
3. datatrove 0.10 (its own venv, bench/out/datatrove-venv, pip on first use; one worker): JsonlReader -> its
   exact dedup (`ExactDedupSignature`, `ExactFindDedups`, `ExactDedupFilter` on the raw text) -> MinHash dedup at
   its defaults (`MinhashConfig()`, its four stages) -> `NGramsDecontFilter` at its defaults
   (`NGramsDecontConfig()`: 12-grams of normalised word tokens, one matching n-gram removes a file) -> JsonlWriter.
   No filter step: datatrove's filters (Gopher, C4, FineWeb quality, language id, URL) are heuristics for natural
   language prose and would reject most source code; none targets code. Its decontamination index holds the same
   benchmarks as codemill's catalogue (conf/spark/benchmarks.yaml), each problem's prompt as `query` and its
   solution (its tests when it has none) as the label; it is built with `NGramsDecontIndexer.compute_hashes`
   (with the filter's own tokenizer and hash) outside the timed run, because `NGramsDecontIndexer` requires
   lighteval and loads its tasks from the Hub (codemill's index is prebuilt too: its disk cache); it is kept in
   bench/out/phase1/datatrove-index-<hash of the catalogue's problems> for later runs. Warm-up on a
   tenth of the corpus in the same process, then the timed run.
4. Quality: near-duplicate F1 on the labelled pairs at 0.7 (bench/dedup.py's scoring; exact copies count as
   one cluster) over the pairs both of whose files pass codemill's filters (the others never reach its dedup);
   decontamination recall: planted benchmark copies missing from the output; `decontam_other_removed`: other
   files a system removed as contaminated.
5. Speed: CPU-seconds of the whole process tree (driver, JVM, Python workers) and wall seconds, per MB of
   content; MB per CPU-second is the MB/s per core, and `speedup_per_core_vs_datatrove` = codemill's / datatrove's.
   Left out: the corpus build, the warm-ups, datatrove's index build; codemill's timed run includes starting Spark
   (its `stages_wall_s` is the stages alone) and does more: the filters, and the rejected, duplicate,
   contamination and stats tables.
Ends with `RESULT {json}`: `sizes` maps each size to `cpu_s_per_mb`, `datatrove_cpu_s_per_mb`,
`speedup_per_core_vs_datatrove`, `f1`, `datatrove_f1`, `decontam_recall`, `datatrove_decontam_recall` and more.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

from bench.dedup import (
    DT_MINHASH,
    build_corpus,
    ensure_datatrove,
    evaluate,
    run_worker,
    source_files,
    tree_cpu_seconds,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "phase1"
STAGES = "ingest,filter,exact_dedup,near_dedup,decontaminate"
THRESHOLD = 0.7  # codemill's near_dedup.threshold


# ------------------------------------------------------------------------------------------------ corpus
def rejected_file(k: int, rng: random.Random) -> str:
    """A synthetic, unique file that a StarCoder heuristic rejects (a long line, encoded data, generated code)."""
    def name():
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))

    if k % 3 == 0:
        return f"{name().upper()} = [" + ", ".join(str(rng.randrange(10**9)) for _ in range(300)) + \
            f"]\n\n\ndef {name()}(i):\n    return {name().upper()}[i]\n"
    if k % 3 == 1:
        return f'{name().upper()} = "' + base64.b64encode(rng.randbytes(3000)).decode() + '"\n'
    body = "".join(f"def {name()}({name()}, {name()}):\n    return {name()}({rng.randrange(10**6)})\n\n\n"
                   for _ in range(20))
    return f"# Code generated by protoc-gen-{name()}. DO NOT EDIT.\n# source: {name()}.proto\n\n" + body


def benchmark_copies(n: int, carriers: list[str]) -> list[str]:
    """`n` real files each with one benchmark problem appended: HumanEval prompt + canonical solution, or an MBPP
    description (as a comment) + its reference code, alternately."""
    from codemill import benchmarks

    he, mbpp = benchmarks.problems("humaneval"), benchmarks.problems("mbpp")
    out = []
    for k in range(n):
        if k % 2 == 0:
            p = he[(k // 2) % len(he)]
            copy = p.prompt + p.canonical_solution
        else:
            p = mbpp[(k // 2) % len(mbpp)]
            copy = f"# {p.fields['text']}\n{p.canonical_solution}"
        out.append(carriers[k % len(carriers)] + "\n\n\n" + copy + "\n")
    return out


def build_phase1_corpus(total_bytes: int, seed: int = 0) -> tuple[list[dict], list[tuple[str, str, float]], dict]:
    """(records {id, repo, path, text}, labelled near-duplicate pairs, planted ids by kind: exact ([copy,
    original]), rejects, benchmark copies)."""
    rng = random.Random(seed + 1)
    docs, pairs = build_corpus(int(total_bytes * 0.9), seed)
    base = [d for d in docs if d["doc_id"].startswith("f")]
    seen = {hashlib.sha1(d["content"].encode()).digest() for d in docs}
    planted: dict[str, list[str]] = {"exact": [], "rejects": [], "benchmark_copies": []}
    extra = []
    for k, d in enumerate(rng.sample(base, max(1, len(base) * 3 // 100))):
        extra.append({"doc_id": f"x{k:06d}", "content": d["content"]})
        planted["exact"].append([f"x{k:06d}", d["doc_id"]])
    for k in range(max(3, len(base) * 2 // 100)):
        extra.append({"doc_id": f"r{k:06d}", "content": rejected_file(k, rng)})
        planted["rejects"].append(f"r{k:06d}")
    n_copies = max(4, len(base) // 40)
    carriers = [t for t in source_files(n_copies * 60_000, seed + 7)
                if hashlib.sha1(t.encode()).digest() not in seen][:n_copies]
    for k, text in enumerate(benchmark_copies(n_copies, carriers)):
        extra.append({"doc_id": f"c{k:06d}", "content": text})
        planted["benchmark_copies"].append(f"c{k:06d}")
    records = [{"id": d["doc_id"], "repo": f"repo{int(hashlib.sha1(d['doc_id'].encode()).hexdigest(), 16) % 97}",
                "path": f"src/{d['doc_id']}.py", "text": d["content"]} for d in docs + extra]
    rng.shuffle(records)
    return records, pairs, planted


def write_jsonl(records: list[dict], path: Path) -> float:
    """Writes the records, returns the MB of their content (the denominator of every per-MB figure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return sum(len(r["text"].encode()) for r in records) / 1e6


def warm_sample(records: list[dict]) -> list[dict]:
    """A tenth of the corpus, by a hash of the first 200 characters (keeps variants next to their originals)."""
    return [r for r in records if int(hashlib.sha1(r["text"][:200].encode()).hexdigest(), 16) % 10 == 0]


# ------------------------------------------------------------------------------------------------ scoring
def merge_exact(near: dict[str, object], exact: list[tuple[str, str]]) -> dict[str, object]:
    """Cluster ids with exact copies joined to their representative's near-dup cluster (or to one of their own)."""
    assign = dict(near)
    for dup, rep in exact:
        assign[dup] = assign.setdefault(rep, f"exact:{rep}")
    return assign


def score(assign: dict[str, object], pairs, removed: set[str], planted: dict, contaminated: set[str],
          filtered_out: set[str]) -> dict:
    """F1 at THRESHOLD over the pairs whose files both pass codemill's filters; decontamination recall."""
    eligible = [p for p in pairs if p[0] not in filtered_out and p[1] not in filtered_out]
    ev = evaluate(assign, eligible, THRESHOLD)
    copies = planted["benchmark_copies"]
    return {"f1": round(ev["f1"], 4), "precision": round(ev["precision"], 4), "recall": round(ev["recall"], 4),
            "pairs_scored": len(eligible),
            "decontam_recall": round(sum(c in removed for c in copies) / len(copies), 4),
            "decontam_other_removed": len(contaminated - set(copies)),
            "rejects_removed": sum(r in removed for r in planted["rejects"]),
            "exact_removed": sum(a in removed or b in removed for a, b in planted["exact"])}


# ------------------------------------------------------------------------------------------------ codemill
def pipeline_argv(corpus: Path, lake: Path) -> list[str]:
    return ["--input", str(corpus), "--lake", str(lake), "--stages", STAGES, "--licences.enabled", "false",
            "--redact.enabled", "false", "--ingest.columns", "{content: text}", "--run_id", "bench-phase1",
            "--print_funnel", "false"]


def codemill_worker(corpus: Path, lake: Path) -> None:
    """In a fresh process: the pipeline, timed with its Spark start-up; then its tables, read untimed, into
    lake/../outcome.json (source ids: cluster ids, exact copies, filtered, contaminated, kept)."""
    os.environ.setdefault("CODEMILL_SPARK_LOG_LEVEL", "ERROR")
    cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
    from spark_jobs import pipeline

    summary = pipeline.main(pipeline_argv(corpus, lake))
    wall, cpu = time.perf_counter() - t0, tree_cpu_seconds() - cpu0
    from pyspark.sql import functions as F

    from codemill.lake import Lake
    from codemill.session import get_spark

    spark = get_spark()
    lk = Lake.open(spark, str(lake))
    ids = lk.read("files").select("doc_id", "source_id")
    reps = ids.select(F.col("doc_id").alias("representative"), F.col("source_id").alias("rep_source"))

    def column(name: str) -> list[str]:
        return [r[0] for r in lk.read(name).select("source_id").collect()]

    outcome = {
        "clusters": [list(r) for r in lk.read("near_dup_clusters").join(ids, "doc_id")
                     .select("source_id", "cluster_id").collect()],
        "exact": [list(r) for r in lk.read("exact_duplicates").join(reps, "representative")
                  .select("source_id", "rep_source").collect()],
        "filtered_out": column("rejected"), "kept": column("clean"),
        "contaminated": [r[0] for r in lk.read("contamination").select("doc_id").distinct().join(ids, "doc_id")
                         .select("source_id").collect()]}
    (lake.parent / "outcome.json").write_text(json.dumps(outcome))
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "cores": spark.sparkContext.defaultParallelism,
                      "stages_wall_s": sum(float(s.get("seconds", 0)) for s in summary["stages"])}))


def run_codemill(corpus: Path, work: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = run_worker([sys.executable, "-m", "bench.phase1", "--worker", "codemill", "--corpus", str(corpus),
                      "--lake", str(work / "lake")], env=env, cwd=ROOT)
    res["outcome"] = json.loads((work / "outcome.json").read_text())
    return res


# ------------------------------------------------------------------------------------------------ datatrove
DT_PHASE1 = DT_MINHASH + r'''
import os
from collections import defaultdict

import numpy as np
from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer
from datatrove.pipeline.dedup.exact_dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature,
                                                  ExactFindDedups)

work, warm, tasks, index = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
cfg, decont = MinhashConfig(), NGramsDecontConfig()  # datatrove's defaults

def text_of(doc) -> str:  # ExactDedupConfig's content getter (its return annotation picks the hash input type)
    return doc.text

exact = ExactDedupConfig(content_getter=text_of)

def build_index(folder):
    # NGramsDecontIndexer.run loads lighteval tasks from the Hub; its compute_hashes is the indexing itself, run
    # with the filter's own tokenizer and hash function (NGramsDecontIndexer itself requires lighteval installed).
    os.makedirs(folder, exist_ok=True)
    matcher, hashes = NGramsDecontFilter(index_folder=folder, config=decont), defaultdict(set)
    with open(tasks) as f:
        for line in f:
            t = json.loads(line)
            hashes[t["task"]].update(NGramsDecontIndexer.compute_hashes(matcher, t["label"], t["query"]))
    for task, hs in hashes.items():
        np.array(sorted(hs), dtype=decont.hash_config.np_descr).tofile(os.path.join(folder, f"{task}.index.hashes"))
    return sum(map(len, hashes.values()))

def run(base, index):
    common = dict(logging_dir=f"{base}/logs", skip_completed=False)
    LocalPipelineExecutor(pipeline=[JsonlReader(f"{base}/input", compression=None),
                                    ExactDedupSignature(output_folder=f"{base}/exact_sigs", config=exact)],
                          tasks=1, workers=1, **common).run()
    LocalPipelineExecutor(pipeline=[ExactFindDedups(data_folder=f"{base}/exact_sigs",
                                                    output_folder=f"{base}/exact_dups", config=exact)],
                          tasks=1, workers=1, **common).run()
    LocalPipelineExecutor(pipeline=[JsonlReader(f"{base}/input", compression=None),
                                    ExactDedupFilter(data_folder=f"{base}/exact_dups", config=exact,
                                                     exclusion_writer=JsonlWriter(f"{base}/exact_removed",
                                                                                  compression=None)),
                                    JsonlWriter(f"{base}/exact_kept", compression=None)],
                          tasks=1, workers=1, **common).run()
    pipeline(base, cfg, source=f"{base}/exact_kept", after=[NGramsDecontFilter(
        index_folder=index, config=decont, exclusion_writer=JsonlWriter(f"{base}/contaminated", compression=None))])

t_index = time.perf_counter()
if not os.path.exists(f"{index}.hashes"):  # one index per catalogue (the folder is named by its hash)
    n_hashes = build_index(index)
    with open(f"{index}.hashes", "w") as f:
        f.write(str(n_hashes))
n_hashes = int(open(f"{index}.hashes").read())
t_index = time.perf_counter() - t_index
run(warm, index)  # warm-up: imports, tokenizers, hash set-up
c0, t0 = cpu(), time.perf_counter()
run(work, index)
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0, "cores": 1, "config": str(cfg),
                  "decont_config": str(decont), "index_hashes": n_hashes, "index_build_s": t_index}))
'''


def benchmark_tasks(path: Path) -> int:
    """The catalogue's problems as datatrove index input: {task: benchmark, query: prompt, label: solution}."""
    from codemill import benchmarks

    n = 0
    with open(path, "w") as f:
        for bench in benchmarks.load_catalogue():
            for p in bench.problems():
                label = p.canonical_solution or p.tests
                if label.strip():
                    f.write(json.dumps({"task": bench.name, "query": p.prompt or None, "label": label}) + "\n")
                    n += 1
    return n


def read_outputs(work: Path) -> dict:
    """Source ids per output folder of the datatrove run and their MinHash cluster ids."""
    out: dict = {"clusters": {}}
    for sub in ("kept", "removed", "contaminated", "exact_removed"):
        ids = []
        for path in (work / sub).glob("*.jsonl*"):
            with open(path) as f:
                for line in f:
                    rec = json.loads(line)
                    ids.append(rec["id"])
                    cid = rec.get("metadata", {}).get("minhash_cluster_id", -1)
                    if cid != -1:
                        out["clusters"][rec["id"]] = cid
        out[sub] = ids
    return out


def run_datatrove(corpus: Path, warm: Path, tasks: Path, work: Path) -> dict:
    py = ensure_datatrove()
    shutil.rmtree(work, ignore_errors=True)
    for src, dest in ((corpus, work / "input"), (warm, work / "warm-up" / "input")):
        dest.mkdir(parents=True)
        shutil.copyfile(src, dest / "corpus.jsonl")  # the same bytes codemill reads
    (work / "run.py").write_text(DT_PHASE1)
    env = {**os.environ, "DATATROVE_COLORIZE_LOGS": "0", "LOGURU_LEVEL": "WARNING"}
    index = tasks.parent / f"datatrove-index-{hashlib.sha256(tasks.read_bytes()).hexdigest()[:12]}"
    res = run_worker([str(py), str(work / "run.py"), str(work), str(work / "warm-up"), str(tasks), str(index)],
                     env=env)
    res["outcome"] = read_outputs(work)
    return res


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="40,160", help="corpus sizes in MB, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", choices=["codemill"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--lake", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        codemill_worker(Path(args.corpus), Path(args.lake))
        return {}
    OUT.mkdir(parents=True, exist_ok=True)
    tasks = OUT / "benchmark_tasks.jsonl"
    n_tasks = benchmark_tasks(tasks)
    sizes: dict[str, dict] = {}
    dt_info: dict = {}
    for size in sorted(float(x) for x in args.sizes.split(",")):
        t = time.perf_counter()
        records, pairs, planted = build_phase1_corpus(int(size * 1e6), args.seed)
        work = OUT / f"{size:g}mb"
        mb = write_jsonl(records, work / "corpus" / "corpus.jsonl")
        write_jsonl(warm_sample(records), work / "warm-up" / "corpus.jsonl")
        print(f"{size:g} MB: {len(records)} files, {mb:.1f} MB, {len(pairs)} labelled pairs, "
              f"{ {k: len(v) for k, v in planted.items()} }; built in {time.perf_counter() - t:.0f} s", flush=True)
        run_codemill(work / "warm-up" / "corpus.jsonl", work / "codemill-warm-up")
        cm = run_codemill(work / "corpus" / "corpus.jsonl", work / "codemill")
        o = cm["outcome"]
        kept = set(o["kept"])
        cm_q = score(merge_exact({s: c for s, c in o["clusters"]}, [tuple(e) for e in o["exact"]]), pairs,
                     {r["id"] for r in records} - kept, planted, set(o["contaminated"]), set(o["filtered_out"]))
        dt = run_datatrove(work / "corpus" / "corpus.jsonl", work / "warm-up" / "corpus.jsonl", tasks,
                           work / "datatrove")
        d = dt["outcome"]
        exact_removed = set(d["exact_removed"])  # joined to the copy datatrove kept, as codemill's representative
        dt_exact = [(a, b) if a in exact_removed else (b, a) for a, b in planted["exact"]
                    if a in exact_removed or b in exact_removed]
        dt_q = score(merge_exact(d["clusters"], dt_exact), pairs, {r["id"] for r in records} - set(d["kept"]), planted,
                     set(d["contaminated"]), set(o["filtered_out"]))
        dt_info = {k: dt[k] for k in ("config", "decont_config", "index_hashes", "index_build_s")}
        row = {"mb": round(mb, 3), "cpu_s": round(cm["cpu_s"], 2), "wall_s": round(cm["wall_s"], 2),
               "stages_wall_s": round(cm["stages_wall_s"], 2), "cores": cm["cores"],
               "cpu_s_per_mb": round(cm["cpu_s"] / mb, 4), "wall_s_per_mb": round(cm["wall_s"] / mb, 4),
               "mb_per_cpu_s": round(mb / cm["cpu_s"], 4), "peak_rss_mb": round(cm["peak_rss_mb"]),
               "datatrove_cpu_s": round(dt["cpu_s"], 2), "datatrove_wall_s": round(dt["wall_s"], 2),
               "datatrove_cpu_s_per_mb": round(dt["cpu_s"] / mb, 4),
               "datatrove_wall_s_per_mb": round(dt["wall_s"] / mb, 4),
               "datatrove_mb_per_cpu_s": round(mb / dt["cpu_s"], 4),
               "datatrove_peak_rss_mb": round(dt["peak_rss_mb"]),
               "speedup_per_core_vs_datatrove": round(dt["cpu_s"] / cm["cpu_s"], 3),
               "wall_speedup_vs_datatrove": round(dt["wall_s"] / cm["wall_s"], 3),
               **cm_q, **{f"datatrove_{k}": v for k, v in dt_q.items()}}
        sizes[f"{size:g}"] = row
        print(f"  {json.dumps(row)}", flush=True)
    result = {"sizes": sizes, "stages": STAGES, "threshold": THRESHOLD, "benchmark_problems": n_tasks,
              "label": "token LCS similarity (bench/dedup.py)", "datatrove": dt_info,
              "datatrove_steps": "JsonlReader, exact dedup x3, MinHash x4 (defaults), NGramsDecontFilter "
                                 "(defaults), JsonlWriter; no filters (none of datatrove's targets code)"}
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
