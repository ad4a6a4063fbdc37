"""The benchmark catalogue: the one reader of the evaluation benchmarks shipped in `data/benchmarks/`.

Decontamination (`spark_jobs.decontaminate`), the annotator's alignment set (`spark_jobs.annotate_dataset`) and
pass@k evaluation (`trainer.evaluation.benchmarks`) all read benchmark problems through this module, so a
benchmark file is parsed in one place and every consumer sees the same problems.

    from codemill import benchmarks
    for problem in benchmarks.problems("humaneval"):        # the catalogue's benchmark named humaneval
        problem.task_id, problem.prompt, problem.canonical_solution, problem.tests, problem.entry_point

The catalogue is `conf/spark/benchmarks.yaml`: per benchmark a name, its files (a glob under the data folder), the
id field, the text fields that decontamination compares with training files, the file format and the language.
User benchmarks (JSON Lines files of one's own, `user_benchmarks`) and whole folders (`folder_benchmark`, the
annotator's alignment set) are read the same way. Pure Python: no Spark, so the trainer's image can use it.

Public API:
- `Benchmark`: one benchmark (name, files, id field, text fields, format, language); `.paths()`, `.problems()`;
- `Problem`: one problem, the record type every consumer takes what it needs from;
- `load_catalogue(path, data_dir)`, `problems(name, ...)`, `user_benchmarks(patterns, ...)`,
  `folder_benchmark(folder, data_dir)`, `read_records(path, fmt)`;
- `CATALOGUE_FILE`, `DATA_DIR`, `MissingBenchmarkFiles`.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from codemill.config import CONF_DIR, REPO_ROOT
from codemill.languages import EXTENSIONS, canonical_lang

CATALOGUE_FILE = CONF_DIR / "spark" / "benchmarks.yaml"
DATA_DIR = REPO_ROOT / "data" / "benchmarks"
# `language: task_id` in the catalogue: the language is the task id's prefix (HumanEval-X's `CPP/0`).
LANGUAGE_FROM_TASK_ID = "task_id"

Format = Literal["jsonl", "json", "auto"]


class MissingBenchmarkFiles(FileNotFoundError):
    """A benchmark whose files glob matches no file."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem. The normalised fields cover what consumers share; `fields` holds the record as
    shipped, for what only one consumer needs (EvalPlus inputs, MBPP's `test_list`, ...)."""

    benchmark: str  # the catalogue name (a user file's: its file name up to the first dot; a folder's: the folder)
    task_id: str  # the id field's value, else "<benchmark>/<record number in its file>"
    language: str  # canonical language name (codemill.languages)
    prompt: str  # `prompt`, else `complete_prompt` (BigCodeBench-hf); "" when neither
    # The reference solution as shipped: `canonical_solution` (a body that completes the prompt), else the whole
    # program of benchmarks that ship one (`code`: MBPP, `reference_code`: DS-1000); "" when none (Multi-HumanEval
    # ships "None" for a few tasks).
    canonical_solution: str
    solution: str  # the complete reference program: prompt + canonical_solution, or the whole program
    tests: str  # `test`, else `tests`, else the `test_list` asserts one per line; "" when none
    entry_point: str  # `entry_point`; "" when the record has none
    path: str  # the file the problem was read from
    fields: dict[str, Any] = dataclasses.field(repr=False, compare=False)

    def text(self, field: str) -> str | None:
        """The record's field `field` when it is a non-blank string (what decontamination indexes), else None."""
        value = self.fields.get(field)
        return value if isinstance(value, str) and value.strip() else None


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark of the catalogue (an entry of conf/spark/benchmarks.yaml), a user file or a folder."""

    name: str
    files: str  # a glob, relative to `root` (when set) or to the working directory
    id_field: str | None = "task_id"
    text_fields: tuple[str, ...] = ()  # the fields decontamination compares with training files
    format: Format = "jsonl"  # auto: JSON Lines when the file name has `.jsonl`, else JSON
    language: str = "python"  # or `task_id` (LANGUAGE_FROM_TASK_ID); a record's own `language` field wins
    root: str | None = None

    @property
    def pattern(self) -> str:
        return os.path.join(self.root, self.files) if self.root else self.files

    def paths(self) -> list[str]:
        """The benchmark's files, sorted."""
        return sorted(glob.glob(self.pattern))

    def problems(self, *, file: str | None = None) -> list[Problem]:
        """Every problem of the benchmark's files (only the file named `file` when given), in file order.
        Raises `MissingBenchmarkFiles` when no file matches."""
        paths = [p for p in self.paths() if file is None or os.path.basename(p) == file]
        if not paths:
            wanted = self.pattern if file is None else f"{file} of {self.pattern}"
            raise MissingBenchmarkFiles(f"{self.name}: {wanted!r} matches no file")
        return [self._problem(path, i, rec) for path in paths for i, rec in enumerate(read_records(path,
                                                                                                    self.format))]

    def _problem(self, path: str, i: int, rec: dict[str, Any]) -> Problem:
        raw_id = rec.get(self.id_field) if self.id_field else None
        task_id = str(raw_id) if raw_id is not None else f"{self.name}/{i}"
        prompt = rec.get("prompt") or rec.get("complete_prompt") or ""
        body = rec.get("canonical_solution")
        if isinstance(body, str) and body.strip() and body.strip() != "None":
            canonical, solution = body, prompt + body
        else:
            canonical = solution = rec.get("code") or rec.get("reference_code") or ""
        tests = next((rec[k] for k in ("test", "tests") if isinstance(rec.get(k), str)), None)
        if tests is None:
            tests = "\n".join(rec["test_list"]) if isinstance(rec.get("test_list"), list) else ""
        entry_point = rec.get("entry_point")
        return Problem(self.name, task_id, self._language(rec, task_id), prompt, canonical, solution, tests,
                       entry_point if isinstance(entry_point, str) else "", path, rec)

    def _language(self, rec: dict[str, Any], task_id: str) -> str:
        value = rec.get("language")
        if not isinstance(value, str) or not value:
            value = task_id.split("/", 1)[0] if self.language == LANGUAGE_FROM_TASK_ID else self.language
        # MultiPL-E names languages by file extension (`rkt`, `go_test.go`).
        return EXTENSIONS.get(value.rsplit(".", 1)[-1].lower()) or canonical_lang(value)


def read_records(path: str | Path, fmt: Format = "auto") -> list[dict[str, Any]]:
    """The records of one benchmark file: JSON Lines (one object per line) or JSON (an array, or one object),
    gzipped when the name ends in `.gz`. `auto`: JSON Lines when the file name contains `.jsonl`."""
    path = str(path)
    if fmt == "auto":
        fmt = "jsonl" if ".jsonl" in os.path.basename(path) else "json"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        if fmt == "json":
            data = json.load(fh)
            return data if isinstance(data, list) else [data]
        return [json.loads(line) for line in fh if line.strip()]


def load_catalogue(path: str | Path = CATALOGUE_FILE, data_dir: str | Path = DATA_DIR) -> list[Benchmark]:
    """The benchmarks listed in the catalogue file, in its order, their files under `data_dir`."""
    with open(path) as fh:
        entries = (yaml.safe_load(fh) or {}).get("benchmarks") or []
    return [Benchmark(e["name"], e["files"], e.get("id"), tuple(e["fields"]), e.get("format", "jsonl"),
                      e.get("language", "python"), str(data_dir)) for e in entries]


def problems(name: str, *, data_dir: str | Path = DATA_DIR, catalogue: str | Path = CATALOGUE_FILE,
             file: str | None = None) -> list[Problem]:
    """Every problem of the catalogue's benchmarks called `name` (a name may have several entries: BigCodeBench
    ships two files with different fields), only of the file named `file` when given."""
    entries = [b for b in load_catalogue(catalogue, data_dir) if b.name == name]
    if not entries:
        raise KeyError(f"no benchmark {name!r} in {catalogue}")
    if file is not None:
        entries = [b for b in entries if any(os.path.basename(p) == file for p in b.paths())] or entries[:1]
    return [p for b in entries for p in b.problems(file=file)]


def user_benchmarks(patterns: Iterable[str], *, text_fields: Sequence[str] = ("prompt", "canonical_solution"),
                    id_field: str = "task_id") -> list[Benchmark]:
    """One benchmark per user JSON Lines file glob, named by its file name up to the first dot."""
    return [Benchmark(os.path.basename(p).split(".")[0], p, id_field, tuple(text_fields), "jsonl")
            for p in patterns]


def folder_benchmark(folder: str, data_dir: str | Path = DATA_DIR) -> Benchmark:
    """Every JSON / JSON Lines file under `data_dir/folder`, as one benchmark named `folder`."""
    return Benchmark(folder, os.path.join(folder, "*.json*"), "task_id", (), "auto", "python", str(data_dir))
