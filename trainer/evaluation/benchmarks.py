"""The Python code benchmarks the paper reports, as runnable tasks: problems of the benchmark catalogue
(`codemill.benchmarks`, the one reader of the shipped `data/benchmarks/*` files) with their tests.

| name | catalogue benchmark: file | tasks | tests |
|---|---|---|---|
| `humaneval` | humaneval: HumanEval.jsonl.gz | 164 | the original `check(candidate)` asserts |
| `humaneval_plus` | humaneval_plus: HumanEvalPlus.jsonl.gz | 164 | base + plus inputs vs canonical outputs |
| `mbpp` | mbpp: mbpp.jsonl.gz, task ids 11-510 (the test split) | 500 | the three `test_list` asserts |
| `mbpp_plus` | mbpp_plus: MbppPlus.jsonl.gz | 378 | base + plus inputs vs canonical outputs |
| `evoeval_<c>` | evoeval: EvoEval_<c>.jsonl.gz | 100 each | `inputs`, outputs vs the canonical solution |

`evoeval` names the five categories of the EvoEval paper's main table (difficult, creative, subtle, combine,
tool_use); its score is their mean. Differential tests follow EvalPlus: expected outputs are whatever the
canonical solution returns on each input (computed once, in the sandbox), compared exactly, with a float
tolerance, or with the special oracles EvalPlus defines for a handful of tasks.

Prompts: the paper evaluates base models on the raw HumanEval-style prompt with trailing newlines stripped
(a prompt ending in "\\n" makes the tokenizer split the indentation badly); generation stops at the first
top-level statement after the function (`STOPS_*`).

Public API: `Task`, `load_benchmark(name, data_dir)`, `expand(names)`, `unknown(names)`, `BENCHMARKS`, `GROUPS`,
`KNOWN_BROKEN`, `STOPS_FUNCTION`, `STOPS_PROGRAM`.
"""

from __future__ import annotations

import ast
import dataclasses
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from codemill import benchmarks as catalogue
from codemill.benchmarks import DATA_DIR, Problem

EVOEVAL_CATEGORIES = ("difficult", "creative", "subtle", "combine", "tool_use")
BENCHMARKS = ("humaneval", "humaneval_plus", "mbpp", "mbpp_plus") + tuple(f"evoeval_{c}" for c in EVOEVAL_CATEGORIES)
# Aliases expanding to several benchmarks; their score is the mean of the members' scores.
GROUPS = {"evoeval": tuple(f"evoeval_{c}" for c in EVOEVAL_CATEGORIES)}

# Completion of a function body: stop at the next top-level statement (Codex paper §3.1 / bigcode harness).
STOPS_FUNCTION = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ", '\n"""', "\n```")
# MBPP-style prompts ask for whole functions (helpers and imports allowed): stop only at test-like code.
STOPS_PROGRAM = ("\nif __name__", "\nprint(", "\nassert ", '\n"""', "\n```")

# MBPP test split (Austin et al. 2021, §2.1: tasks 11-510).
MBPP_TEST_IDS = range(11, 511)
# EvalPlus special oracles (evalplus/eval/_special_oracle.py): outputs compared as sets, or only for not-None.
MBPP_SET_EQ = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
               "intersection_array", "find_dissimilar", "Diff"}
MBPP_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}

# Canonical solutions in the shipped files that fail their own tests, with the reason; excluded from scoring
# (reported by `load_benchmark(..., include_broken=True)` and tests/trainer/test_evaluation.py).
KNOWN_BROKEN: dict[str, dict[str, str]] = {}


@dataclasses.dataclass(frozen=True)
class Task:
    """One problem. `kind="assert"`: `tests` is appended to the solution; `kind="diff"`: `entry_point` is
    called on `inputs` (a pickled list of argument tuples, or Python source `inputs_source` for EvoEval's
    expression inputs) and compared with the canonical solution's outputs."""

    benchmark: str
    task_id: str
    prompt: str
    canonical_solution: str  # full program: prompt + canonical body (or the whole reference function)
    entry_point: str
    kind: Literal["assert", "diff"]
    style: Literal["function", "program"]
    tests: str = ""
    inputs: bytes | None = None
    inputs_source: str | None = None
    n_inputs: int = 0
    oracle: str = "exact"
    atol: float = 0.0

    @property
    def stops(self) -> tuple[str, ...]:
        return STOPS_FUNCTION if self.style == "function" else STOPS_PROGRAM

    def render_prompt(self) -> str:
        """What the model sees: the prompt without trailing newlines (paper's HumanEval-style handling)."""
        return self.prompt.rstrip("\n") if self.style == "function" else self.prompt

    def program(self, completion: str) -> str:
        """The solution a completion of `render_prompt()` makes (tests are added by the executor)."""
        return self.render_prompt() + completion


def expand(names: Sequence[str]) -> list[str]:
    """Benchmark names with groups (`evoeval`) expanded, order kept, duplicates dropped."""
    out: list[str] = []
    for name in names:
        for member in GROUPS.get(name, (name,)):
            if member not in out:
                out.append(member)
    return out


def unknown(names: Sequence[str]) -> list[str]:
    return [n for n in names if n not in BENCHMARKS and n not in GROUPS]


def _problems(name: str, data_dir: Path, file: str | None = None) -> list[Problem]:
    """The catalogue's problems of benchmark `name` (only those of the file named `file` when given)."""
    return catalogue.problems(name, data_dir=data_dir, file=file)


def _join(prompt: str, body: str) -> str:
    # A few EvoEval prompts end right after the docstring's closing quotes, without the newline the body needs.
    return prompt + body if prompt.endswith("\n") or body.startswith("\n") else prompt + "\n" + body


def _humaneval(data_dir: Path) -> list[Task]:
    return [
        Task("humaneval", p.task_id, p.prompt, _join(p.prompt, p.canonical_solution), p.entry_point, "assert",
             "function", tests=f"\n\n{p.tests}\n\ncheck({p.entry_point})\n")
        for p in _problems("humaneval", data_dir)
    ]


def _mbpp_prompt(text: str, first_test: str) -> str:
    # The EvalPlus MBPP+ prompt shape (docstring with the task and one example assert), used for both MBPPs so
    # their scores are comparable.
    return f'"""\n{text.strip()}\n{first_test.strip()}\n"""\n'


def _mbpp(data_dir: Path) -> list[Task]:
    tasks = []
    for p in _problems("mbpp", data_dir):
        if p.fields["task_id"] not in MBPP_TEST_IDS:
            continue
        first_test = p.fields["test_list"][0]
        entry = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*([A-Za-z_]\w*)\s*\(", first_test)
        code = p.canonical_solution.replace("\r\n", "\n")  # MBPP ships whole functions (`code`)
        prompt = _mbpp_prompt(p.fields["text"], first_test)
        tests = "\n\n" + (p.fields["test_setup_code"] or "") + "\n" + p.tests + "\n"
        tasks.append(Task("mbpp", f"Mbpp/{p.task_id}", prompt, prompt + code, entry.group(1) if entry else "",
                          "assert", "program", tests=tests))
    return tasks


_TUPLE_ARG = re.compile(r"isinstance\((\w+),\s*tuple\)")
_TUPLE_ITEMS = re.compile(r"isinstance\((\w+),\s*tuple\)\s+for\s+\1\s+in\s+(\w+)")


def _deep_tuple(x):
    return tuple(_deep_tuple(i) for i in x) if isinstance(x, list) else x


def _restore_types(params: list[str], contract: str, inputs: list) -> list:
    """JSON stored MBPP+ tuples as lists and complex numbers as strings; the task's contract (`isinstance(x,
    tuple)`, `complex`) says which arguments to restore. A contract with a helper (`def tuple_check`) checks
    nested tuples, so those arguments are restored recursively."""
    whole = {m for m in _TUPLE_ARG.findall(contract) if m in params}
    items = {coll for _, coll in _TUPLE_ITEMS.findall(contract) if coll in params}
    nested = "def " in contract
    complex_args = "complex" in contract
    if not (whole or items or complex_args):
        return inputs
    fixed = []
    for args in inputs:
        args = list(args)
        for i, name in enumerate(params[: len(args)]):
            if name in items and isinstance(args[i], list):
                args[i] = [tuple(x) if isinstance(x, list) else x for x in args[i]]
            if name in whole and isinstance(args[i], list):
                args[i] = _deep_tuple(args[i]) if nested else tuple(args[i])
            if complex_args and isinstance(args[i], str):
                try:
                    args[i] = complex(args[i])
                except ValueError:
                    pass
        fixed.append(args)
    return fixed


def _params(program: str, entry_point: str) -> list[str]:
    for node in ast.walk(ast.parse(program)):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            return [a.arg for a in node.args.args]
    return []


def _plus(benchmark: str, data_dir: Path, style: Literal["function", "program"]) -> list[Task]:
    tasks = []
    for p in _problems(benchmark, data_dir):
        r = p.fields
        inputs = list(r["base_input"]) + list(r["plus_input"])
        solution = _join(p.prompt, p.canonical_solution)
        if style == "program":
            inputs = _restore_types(_params(solution, p.entry_point), r.get("contract", ""), inputs)
        oracle = "exact"
        if p.entry_point == "find_zero":
            oracle = "poly_root"
        elif style == "program" and p.entry_point in MBPP_SET_EQ:
            oracle = "set"
        elif style == "program" and p.entry_point in MBPP_NOT_NONE:
            oracle = "not_none"
        tasks.append(Task(benchmark, p.task_id, p.prompt, solution, p.entry_point, "diff", style,
                          inputs=pickle.dumps(inputs), n_inputs=len(inputs), oracle=oracle,
                          atol=float(r.get("atol") or 0.0)))
    return tasks


def _evoeval(data_dir: Path, category: str) -> list[Task]:
    tasks = []
    for p in _problems("evoeval", data_dir, file=f"EvoEval_{category}.jsonl.gz"):
        # Inputs are Python argument lists as source text (`"[1, 2], 3"`, `"[5] * 5000, 5"`): evaluated in the
        # sandbox child, before the candidate's code runs.
        source = "[" + ",\n".join(f"_args({s})" for s in p.fields["inputs"]) + "]"
        solution = _join(p.prompt, p.canonical_solution)
        tasks.append(Task(f"evoeval_{category}", p.task_id, p.prompt, solution, p.entry_point, "diff",
                          "function", inputs_source=source, n_inputs=len(p.fields["inputs"])))
    return tasks


def load_benchmark(name: str, data_dir: str | Path = DATA_DIR, *, include_broken: bool = False) -> list[Task]:
    """All tasks of one benchmark (not a group), minus `KNOWN_BROKEN` ones unless `include_broken`."""
    data_dir = Path(data_dir)
    if name == "humaneval":
        tasks = _humaneval(data_dir)
    elif name == "humaneval_plus":
        tasks = _plus(name, data_dir, "function")
    elif name == "mbpp":
        tasks = _mbpp(data_dir)
    elif name == "mbpp_plus":
        tasks = _plus(name, data_dir, "program")
    elif name.startswith("evoeval_") and name[len("evoeval_"):] in EVOEVAL_CATEGORIES:
        tasks = _evoeval(data_dir, name[len("evoeval_"):])
    else:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS + tuple(GROUPS))}")
    broken = KNOWN_BROKEN.get(name, {})
    return tasks if include_broken else [t for t in tasks if t.task_id not in broken]
