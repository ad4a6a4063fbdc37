"""Code-specific quality heuristics as rules: `files` -> `filtered` + `rejected` + `filter_stats`.

    python -m spark_jobs.pipeline --input data/raw --lake lake --stages filter

In the spirit of BigCode's StarCoder filters (arXiv 2305.06161 §3: line length, alphanumeric fraction, encoded data,
auto-generated files, data-file sizes, HTML visible text) as used in paper §2.1 ("basic filtering"); the thresholds are
per language in `conf/spark/filters.yaml` (`defaults`, then `languages.<lang>` overrides). A rejected row keeps the
first failing rule, every failing rule and all measured values.

Two kinds of small declarations, each written once (datatrove's one-class-per-filter, but vectorised):
- a `Measure` is a named number per file: its Python computation (run for every measure in one pass per file,
  `measure_text`, by a vectorised Arrow UDF on the workers) and its Spark SQL reference (`add_measures_sql`, the
  same struct with ~11 regex and higher-order-function passes per file, kept as the reference the tests compare the
  Python pass with, and 3.6-5.2x slower: bench/filter_decontam.py, docs/curation.md);
- a `Rule` is a reason for rejecting a file: the measures it reads, its per-language threshold keys and its
  decision as a Spark Column expression, evaluated for all rules in one `select` (`apply_rules`).

Adding a rule = appending a `Rule` to `RULES` (its place there is its priority for `first_reason`), a `Measure` to
`MEASURES` if it needs a new one, and its threshold under `defaults:` in `conf/spark/filters.yaml`. `judge(...,
rules=, measures=)` also takes rules and measures defined elsewhere (tests/spark_jobs/test_filter.py does).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pyarrow as pa
import yaml
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StructField, StructType

from codemill import schemas
from codemill.config import CONF_DIR, REPO_ROOT, ConfigError

DEFAULT_RULES_FILE = str(CONF_DIR / "spark" / "filters.yaml")

# Comment syntax per family; a language not listed gets no comment-ratio measure (and so no comment-ratio rule).
HASH_COMMENT = ("python", "ruby", "shell", "perl", "r", "julia", "elixir", "makefile", "cmake", "dockerfile",
                "powershell", "tcl", "awk", "nim", "yaml", "toml")
SLASH_COMMENT = ("c", "cpp", "java", "javascript", "typescript", "csharp", "go", "rust", "scala", "kotlin",
                 "swift", "dart", "php", "objective-c", "objective-cpp", "groovy", "cuda", "zig", "d",
                 "protocol-buffer", "glsl")
DASH_COMMENT = ("sql", "lua", "haskell", "ada")
MARKUP_COMMENT = ("html", "xml", "vue", "svelte")
ESCAPES_PATTERN = r"(?:\\x[0-9a-fA-F]{2}){32,}|(?:\\u[0-9a-fA-F]{4}){16,}"
ENCODED_PATTERN = r"[A-Za-z0-9+/]{64,}={0,2}|" + ESCAPES_PATTERN
TAGS_PATTERN = r"(?is)<script\b.*?</script>|<style\b.*?</style>|<!--.*?-->|<[^>]*>"
MINIFIED_PATH = r"\.min\.(js|css|mjs)$|-min\.js$|\.bundle\.js$"

# Byte-level character classes. Spark's (Java's) `\s` is ASCII whitespace; in UTF-8 an ASCII byte is always a whole
# character, so counting bytes counts the same characters as the SQL regexes do.
_ALL_BYTES = bytes(range(256))
_NOT_ALNUM = bytes(b for b in _ALL_BYTES if not (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122))
_NOT_SPACE = bytes(b for b in _ALL_BYTES if b not in b" \t\n\x0b\x0c\r")
# Base64 alphabet bytes -> "a", others -> " ": in a file without 64 "a" in a row the first alternative of
# ENCODED_PATTERN cannot match, so the escapes alone are looked for (a scan that only stops at backslashes), and not
# at all without "\\x" or "\\u": this was the slowest measure.
_B64_RUN = bytes(97 if (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in b"+/") else 32 for b in _ALL_BYTES)
_B64_64 = b"a" * 64


# ------------------------------------------------------------------------------------------------------ measures
class _Patterns:
    """Compiled regexes of one filter configuration (built once per worker process)."""

    _cache: dict = {}

    def __init__(self, markers: tuple[str, ...]):
        self.encoded = re.compile(ENCODED_PATTERN)
        self.escapes = re.compile(ESCAPES_PATTERN)
        self.autogen = re.compile("|".join(re.escape(m.lower()) for m in markers) or "(?!x)x")
        self.tags = re.compile(TAGS_PATTERN)
        self.spaces = re.compile(r"[ \t\n\x0b\x0c\r]+")
        # A comment line: optional ASCII whitespace then the prefix; the match runs to the end of the line, so the
        # summed match lengths equal the summed lengths of those lines.
        self.line = {p: re.compile(rf"(?m)^[ \t\x0b\x0c\r]*{re.escape(p)}[^\n]*") for p in ("#", "//", "--")}
        self.c_block = re.compile(r"(?s)/\*.*?\*/")
        self.html_block = re.compile(r"(?s)<!--.*?-->")

    @classmethod
    def get(cls, markers: tuple[str, ...]) -> _Patterns:
        if markers not in cls._cache:
            cls._cache[markers] = cls(markers)
        return cls._cache[markers]


def _sum_len(matches: list[str]) -> int:
    return sum(map(len, matches))


class Text:
    """One file as the Python measures see it: `content`, `lang`, and what several measures share, each computed
    at most once per file (the one pass)."""

    def __init__(self, content: str, lang: str | None, patterns: _Patterns, head_chars: int):
        self.content, self.lang, self.patterns, self.head_chars = content, lang, patterns, head_chars
        self.n = len(content)
        self.denom = float(max(self.n, 1))

    @functools.cached_property
    def lines(self) -> list[str]:
        return self.content.split("\n")

    @functools.cached_property
    def utf8(self) -> bytes:
        return self.content.encode("utf-8", "surrogatepass")

    @functools.cached_property
    def blobs(self) -> list[str]:
        """The ENCODED_PATTERN matches."""
        if _B64_64 in self.utf8.translate(_B64_RUN):
            return self.patterns.encoded.findall(self.content)
        c = self.content
        return self.patterns.escapes.findall(c) if "\\x" in c or "\\u" in c else []

    @functools.cached_property
    def visible_chars(self) -> float:
        """Length of the text outside tags, scripts, styles and comments, whitespace runs counted as one."""
        p = self.patterns
        return float(len(p.spaces.sub(" ", p.tags.sub("", self.content))))

    @functools.cached_property
    def comment_chars(self) -> int | None:
        """Characters in comments (None: no known comment syntax for the language)."""
        c, p, lang = self.content, self.patterns, self.lang
        if lang in HASH_COMMENT:
            return _sum_len(p.line["#"].findall(c))
        if lang in SLASH_COMMENT:
            return _sum_len(p.line["//"].findall(c)) + _sum_len(p.c_block.findall(c))
        if lang in DASH_COMMENT:
            return _sum_len(p.line["--"].findall(c)) + _sum_len(p.c_block.findall(c))
        if lang in MARKUP_COMMENT:
            return _sum_len(p.html_block.findall(c))
        return None


def _sum_lengths(arr: Column) -> Column:
    return F.aggregate(arr, F.lit(0).cast("long"), lambda acc, x: acc + F.length(x))


class TextColumns:
    """The same for the Spark SQL reference: Column expressions over `content` and `lang` that several measures
    share."""

    def __init__(self, autogen_markers: Collection[str], head_chars: int):
        c = self.content = F.col("content")
        self.lang = F.col("lang")
        self.head_chars = head_chars
        self.autogen_regex = "|".join(re.escape(m.lower()) for m in autogen_markers) or "(?!x)x"
        self.lines = F.split(c, "\n")
        self.n_chars = F.length(c).cast("double")
        self.n_lines = F.size(self.lines).cast("double")
        self.denom = F.greatest(self.n_chars, F.lit(1.0))
        self.blobs = F.regexp_extract_all(c, F.lit(f"({ENCODED_PATTERN})"), 1)
        self.visible_chars = F.length(F.regexp_replace(F.regexp_replace(c, TAGS_PATTERN, ""), r"\s+", " ")) \
            .cast("double")

        def line_comments(prefix: str) -> Column:
            return _sum_lengths(F.filter(self.lines, lambda x: x.rlike(rf"^\s*{prefix}")))

        def blocks(pattern: str) -> Column:
            return _sum_lengths(F.regexp_extract_all(c, F.lit(f"({pattern})"), 1))

        # Python docstrings are documentation, not comments: docstring-rich API modules are good code.
        self.comment_chars = (
            F.when(self.lang.isin(*HASH_COMMENT), line_comments("#"))
            .when(self.lang.isin(*SLASH_COMMENT), line_comments("//") + blocks(r"(?s)/\*.*?\*/"))
            .when(self.lang.isin(*DASH_COMMENT), line_comments("--") + blocks(r"(?s)/\*.*?\*/"))
            .when(self.lang.isin(*MARKUP_COMMENT), blocks(r"(?s)<!--.*?-->"))
        )


@dataclasses.dataclass(frozen=True)
class Measure:
    """A number per file (a double; None where it does not apply, which no rule fails on), declared once."""

    name: str  # its key in `rejected.measures`
    python: Callable[[Text], float | None]  # the value, in the one Python pass per file
    sql: Callable[[TextColumns], Column] | None = None  # the same value in Spark SQL: the reference of the tests
    # Lower-bound threshold keys without which the measure is not worth its cost: it is then computed only for the
    # languages where one of them is above 0 (the others get None; a lower bound of 0 never fails).
    only_where_positive: tuple[str, ...] = ()


_VISIBLE = ("min_visible_text_ratio", "min_visible_chars")

MEASURES = (
    Measure("n_chars", lambda f: float(f.n), lambda s: s.n_chars),
    Measure("n_lines", lambda f: float(len(f.lines)), lambda s: s.n_lines),
    Measure("max_line_length", lambda f: float(max(map(len, f.lines))),
            lambda s: F.array_max(F.transform(s.lines, lambda x: F.length(x))).cast("double")),
    Measure("mean_line_length", lambda f: f.n / float(max(len(f.lines), 1)),
            lambda s: s.n_chars / F.greatest(s.n_lines, F.lit(1.0))),
    Measure("alnum_fraction", lambda f: len(f.utf8.translate(None, _NOT_ALNUM)) / f.denom,
            lambda s: F.length(F.regexp_replace(s.content, "[^A-Za-z0-9]", "")).cast("double") / s.denom),
    Measure("whitespace_fraction", lambda f: len(f.utf8.translate(None, _NOT_SPACE)) / f.denom,
            lambda s: F.length(F.regexp_replace(s.content, r"\S", "")).cast("double") / s.denom),
    Measure("encoded_fraction", lambda f: _sum_len(f.blobs) / f.denom, lambda s: _sum_lengths(s.blobs) / s.denom),
    Measure("max_encoded_blob", lambda f: float(max(map(len, f.blobs), default=0)),
            lambda s: F.coalesce(F.array_max(F.transform(s.blobs, lambda x: F.length(x))), F.lit(0)).cast("double")),
    Measure("auto_generated",
            lambda f: 1.0 if f.patterns.autogen.search(f.content[:f.head_chars].lower()) else 0.0,
            lambda s: F.lower(F.substring(s.content, 1, s.head_chars)).rlike(s.autogen_regex).cast("double")),
    Measure("visible_text_ratio", lambda f: f.visible_chars / f.denom, lambda s: s.visible_chars / s.denom,
            only_where_positive=_VISIBLE),
    Measure("visible_chars", lambda f: f.visible_chars, lambda s: s.visible_chars, only_where_positive=_VISIBLE),
    # null (no rule) for languages without a known comment syntax; least() alone would turn null into 1.0
    Measure("comment_ratio", lambda f: None if f.comment_chars is None else min(f.comment_chars / f.denom, 1.0),
            lambda s: F.when(s.comment_chars.isNotNull(), F.least(s.comment_chars / s.denom, F.lit(1.0)))),
)


# --------------------------------------------------------------------------------------------------------- rules
@dataclasses.dataclass(frozen=True)
class Rule:
    """A reason to reject a file. `fails(m, t)` returns a boolean Column: `m.<measure>` is a measure of the row (only
    those in `measures`), `t.<key>` the row's threshold for its language (only those in `thresholds`); file columns
    (`path`, `lang`) are read with `F.col`. A null decision does not fail."""

    name: str  # the reason: `first_reason`, `reasons`, `filter_stats.reason`
    measures: tuple[str, ...]
    thresholds: tuple[str, ...]  # keys of `defaults`/`languages.<lang>` in the rules file
    fails: Callable[[Any, Any], Column]
    # Fallback values of threshold keys the rules file leaves out. The shipped rules have none: their numbers live
    # only in conf/spark/filters.yaml, which must then name them.
    defaults: Mapping[str, float] = dataclasses.field(default_factory=dict)
    enabled_by: str | None = None  # a boolean FilterConfig field; the rule is off when it is false

    def __post_init__(self):
        if not set(self.defaults) <= set(self.thresholds):
            raise ValueError(f"rule {self.name!r}: defaults for {sorted(set(self.defaults) - set(self.thresholds))},"
                             f" which are not among its thresholds {list(self.thresholds)}")


# Rule order = the order `first_reason` is picked in: specific causes (generated, encoded, minified) before the
# generic line-length and character-mix symptoms they also trigger.
RULES = (
    Rule("unknown_language", (), (), lambda m, t: F.col("lang") == "unknown", enabled_by="drop_unknown_language"),
    Rule("min_chars", ("n_chars",), ("min_chars",), lambda m, t: m.n_chars < t.min_chars),
    Rule("max_chars", ("n_chars",), ("max_chars",), lambda m, t: m.n_chars > t.max_chars),
    Rule("auto_generated", ("auto_generated",), (), lambda m, t: m.auto_generated > 0),
    Rule("encoded_data", ("encoded_fraction", "max_encoded_blob"), ("max_encoded_fraction", "max_encoded_blob"),
         lambda m, t: (m.encoded_fraction > t.max_encoded_fraction) | (m.max_encoded_blob > t.max_encoded_blob)),
    Rule("minified", ("whitespace_fraction",), ("min_whitespace_fraction",),
         lambda m, t: F.lower(F.col("path")).rlike(MINIFIED_PATH)
         | (m.whitespace_fraction < t.min_whitespace_fraction)),
    Rule("max_line_length", ("max_line_length",), ("max_line_length",),
         lambda m, t: m.max_line_length > t.max_line_length),
    Rule("mean_line_length", ("mean_line_length",), ("max_mean_line_length",),
         lambda m, t: m.mean_line_length > t.max_mean_line_length),
    Rule("alnum_fraction", ("alnum_fraction",), ("min_alnum_fraction",),
         lambda m, t: m.alnum_fraction < t.min_alnum_fraction),
    Rule("visible_text", ("visible_text_ratio", "visible_chars"), _VISIBLE,
         lambda m, t: (m.visible_text_ratio < t.min_visible_text_ratio) | (m.visible_chars < t.min_visible_chars)),
    Rule("comment_ratio", ("comment_ratio",), ("min_comment_ratio", "max_comment_ratio"),
         lambda m, t: m.comment_ratio.isNotNull() & ((m.comment_ratio < t.min_comment_ratio)
                                                     | (m.comment_ratio > t.max_comment_ratio))),
)


def threshold_keys(rules: Collection[Rule] = RULES) -> tuple[str, ...]:
    """Every threshold key the rules read, in rule order: the keys a rules file may set."""
    return tuple(dict.fromkeys(k for r in rules for k in r.thresholds))


THRESHOLD_KEYS = threshold_keys()


def check_declarations(rules: Collection[Rule], measures: Collection[Measure]) -> None:
    """Names are unique and every measure a rule reads is declared (a programming error otherwise)."""
    problems = []
    for kind, names in (("rule", [r.name for r in rules]), ("measure", [m.name for m in measures])):
        problems += [f"{kind} {n!r} is declared twice" for n in sorted({n for n in names if names.count(n) > 1})]
    declared = {m.name for m in measures}
    problems += [f"rule {r.name!r} reads measure {n!r}, which is not declared" for r in rules for n in r.measures
                 if n not in declared]
    if problems:
        raise ValueError("; ".join(problems))


# -------------------------------------------------------------------------------------------------- configuration
@dataclasses.dataclass
class FilterConfig:
    """`filter.*` keys; thresholds live in `rules_file` and may be overridden here."""

    rules_file: str = DEFAULT_RULES_FILE
    # Overrides of the file's `defaults` and `languages` sections.
    defaults: dict[str, float] = dataclasses.field(default_factory=dict)
    languages: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    # Case-insensitive markers looked for in the first `autogen_head_chars` characters.
    autogen_markers: list[str] = dataclasses.field(default_factory=lambda: [
        "auto-generated", "autogenerated", "automatically generated", "generated by", "do not edit",
        "generated from", "this file was generated",
    ])
    autogen_head_chars: int = 500
    drop_unknown_language: bool = True

    def __post_init__(self):  # relative paths: against the repository root unless they exist from here
        if not os.path.isabs(self.rules_file) and not os.path.exists(self.rules_file):
            self.rules_file = str(REPO_ROOT / self.rules_file)

    def validate(self, rules: Collection[Rule] = RULES) -> list[str]:
        """Problems of this config for `rules`, each naming the key: a missing rules file, a threshold key that no
        rule reads (in the rules file or in the overrides), a threshold with no default."""
        if not os.path.isfile(self.rules_file):
            return [f"rules_file: {self.rules_file!r} does not exist"]
        return self._threshold_problems(self._rules_file_data(), rules)

    def thresholds(self, rules: Collection[Rule] = RULES) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(defaults, per-language overrides) of `rules`: their own defaults, then the rules file, then this
        config's overrides. Raises ConfigError naming every unknown or missing key."""
        data = self._rules_file_data()
        problems = self._threshold_problems(data, rules)
        if problems:
            raise ConfigError([f"filter.{p}" for p in problems])
        defaults = {k: float(v) for r in rules for k, v in r.defaults.items()}
        defaults.update({k: float(v) for k, v in (data.get("defaults") or {}).items()})
        defaults.update({k: float(v) for k, v in self.defaults.items()})
        langs: dict[str, dict[str, float]] = {}
        for lang, vals in list((data.get("languages") or {}).items()) + list(self.languages.items()):
            langs.setdefault(lang, {}).update({k: float(v) for k, v in (vals or {}).items()})
        return defaults, langs

    def _rules_file_data(self) -> dict:
        with open(self.rules_file) as fh:
            return yaml.safe_load(fh) or {}

    def _threshold_problems(self, data: dict, rules: Collection[Rule]) -> list[str]:
        known = threshold_keys(rules)
        where = f"rules_file: {self.rules_file}: "
        problems = [f"{where}unknown section {k!r}; expected 'defaults' and 'languages'"
                    for k in data if k not in ("defaults", "languages")]
        for prefix, section in ((where, data), ("", {"defaults": self.defaults, "languages": self.languages})):
            keys = [f"defaults.{k}" for k in section.get("defaults") or {} if k not in known]
            keys += [f"languages.{lang}.{k}" for lang, vals in (section.get("languages") or {}).items()
                     for k in vals or {} if k not in known]
            problems += [f"{prefix}{key}: no rule reads this threshold; known: {list(known)}" for key in keys]
        have = set(data.get("defaults") or {}) | set(self.defaults) | {k for r in rules for k in r.defaults}
        missing = [k for k in known if k not in have]
        if missing:
            problems.append(f"{where}has no default for {missing}")
        return problems


# ------------------------------------------------------------------------------------------------ the transforms
def measure_text(c: str | None, lang: str | None, *, markers: Collection[str] = (), head_chars: int = 500,
                 measures: Collection[Measure] = MEASURES, skip: Collection[str] = ()) -> tuple:
    """The `measures` of one file (floats; None where a measure does not apply or is in `skip`), the values
    `add_measures_sql` computes with Spark SQL."""
    if c is None:
        return (None,) * len(measures)
    f = Text(c, lang, _Patterns.get(tuple(markers)), head_chars)
    return tuple(None if m.name in skip else m.python(f) for m in measures)


def add_measures(df: DataFrame, *, measures: Collection[Measure] = MEASURES, autogen_markers: Collection[str] = (),
                 autogen_head_chars: int = 500, only_languages: Mapping[str, Collection[str]] | None = None
                 ) -> DataFrame:
    """Adds a `_m` struct of measured values (doubles, one field per measure), one Python pass per file in an Arrow
    UDF. `only_languages`: measure name -> the only languages it is computed for (other rows get null, which no rule
    fails on); a measure not named there is computed for every file."""
    measures = tuple(measures)
    out_type = StructType([StructField(m.name, DoubleType(), True) for m in measures])
    markers, head = tuple(autogen_markers), int(autogen_head_chars)
    only_languages = only_languages or {}
    only = [frozenset(only_languages[m.name]) if m.name in only_languages else None for m in measures]
    plan = list(zip([m.python for m in measures], only))
    arrow_type = pa.struct([pa.field(m.name, pa.float64()) for m in measures])

    def measure(content, lang):
        patterns = _Patterns.get(markers)
        cols: list[list] = [[] for _ in plan]
        for c, g in zip(content.to_pylist(), lang.to_pylist()):
            f = None if c is None else Text(c, g, patterns, head)
            for col, (python, langs) in zip(cols, plan):
                col.append(None if f is None or (langs is not None and g not in langs) else python(f))
        return pa.StructArray.from_arrays([pa.array(col, type=pa.float64()) for col in cols],
                                          fields=list(arrow_type))

    # Arrays -> Array hints set by hand: `from __future__ import annotations` makes written ones strings.
    measure.__annotations__ = {"content": pa.Array, "lang": pa.Array, "return": pa.Array}
    udf = F.arrow_udf(measure, out_type)
    return df.withColumn("_m", udf(F.col("content"), F.col("lang")))


def add_measures_sql(df: DataFrame, *, measures: Collection[Measure] = MEASURES,
                     autogen_markers: Collection[str] = (), autogen_head_chars: int = 500) -> DataFrame:
    """Adds the same `_m` struct as `add_measures` from each measure's Spark SQL reference (no Python workers;
    several times slower). The struct's fields come from the same declarations; the expressions are the independent
    second implementation the tests compare the Python pass with."""
    s = TextColumns(autogen_markers, autogen_head_chars)
    lacking = [m.name for m in measures if m.sql is None]
    if lacking:
        raise ValueError(f"measures {lacking} have no Spark SQL reference (Measure.sql)")
    return df.withColumn("_m", F.struct(*[m.sql(s).alias(m.name) for m in measures]))


class _Reads:
    """The names a rule may read: `m.<measure>` / `t.<threshold>`, only those the rule declares."""

    def __init__(self, rule: str, field: str, values: Mapping[str, Column]):
        self._rule, self._field, self._values = rule, field, values

    def __getattr__(self, name: str) -> Column:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"rule {self._rule!r} reads {name!r}, which is not in its Rule.{self._field} "
                                 f"{list(self._values)}") from None


def _threshold(key: str, defaults: Mapping[str, float], langs: Mapping[str, Mapping[str, float]]) -> Column:
    """CASE lang WHEN ... THEN <per-language value> ELSE <default> END."""
    expr = None
    for lang, vals in sorted(langs.items()):
        if key in vals:
            cond = F.col("lang") == lang
            expr = F.when(cond, F.lit(vals[key])) if expr is None else expr.when(cond, F.lit(vals[key]))
    return F.lit(defaults[key]) if expr is None else expr.otherwise(F.lit(defaults[key]))


def apply_rules(df: DataFrame, *, defaults: Mapping[str, float], languages: Mapping[str, Mapping[str, float]],
                rules: Collection[Rule] = RULES) -> DataFrame:
    """Adds `reasons` (every failing rule, in `rules` order), `first_reason` and `measures` (map) to measured
    rows (`_m`): every rule's decision in one expression."""
    m = F.col("_m")

    def fails(rule: Rule) -> Column:
        reads = _Reads(rule.name, "measures", {n: m[n] for n in rule.measures})
        limits = _Reads(rule.name, "thresholds", {k: _threshold(k, defaults, languages) for k in rule.thresholds})
        return rule.fails(reads, limits)

    reasons = F.array_compact(F.array(*[F.when(fails(r), F.lit(r.name)) for r in rules]))
    names = [f.name for f in df.schema["_m"].dataType.fields]
    measures = F.map_from_arrays(F.array(*[F.lit(n) for n in names]), F.array(*[m[n] for n in names]))
    return (df.withColumn("reasons", reasons)
            .withColumn("first_reason", F.try_element_at(F.col("reasons"), F.lit(1)))
            .withColumn("measures", F.map_filter(measures, lambda k, v: v.isNotNull()))
            .drop("_m"))


def filtered_rows(judged: DataFrame) -> DataFrame:
    return judged.where(F.size("reasons") == 0).select(*schemas.FILES.fieldNames())


def rejected_rows(judged: DataFrame) -> DataFrame:
    return judged.where(F.size("reasons") > 0).select(*schemas.REJECTED.fieldNames())


def filter_stats(judged: DataFrame, *, run_id: str) -> DataFrame:
    """Rows and bytes per language for `input`, `kept` and each first failing rule."""
    reason = F.coalesce(F.col("first_reason"), F.lit("kept"))
    per_reason = judged.groupBy("lang", reason.alias("reason")).agg(
        F.count("*").alias("rows"), F.sum("size_bytes").alias("bytes"))
    totals = judged.groupBy("lang").agg(F.count("*").alias("rows"), F.sum("size_bytes").alias("bytes")) \
        .withColumn("reason", F.lit("input"))
    return (per_reason.unionByName(totals).withColumn("run_id", F.lit(run_id))
            .select(F.col("run_id"), "lang", "reason", F.col("rows").cast("long"), F.col("bytes").cast("long")))


def measured_languages(measure: Measure, defaults: Mapping[str, float],
                       langs: Mapping[str, Mapping[str, float]]) -> list[str] | None:
    """The languages `measure` is computed for: those with one of its `only_where_positive` thresholds above 0 (none
    when no rule reads them), or None (every language) when it has none or the defaults make one apply everywhere."""
    keys = measure.only_where_positive
    if not keys or any(defaults.get(k, 0) > 0 for k in keys):
        return None
    return sorted(lang for lang, vals in langs.items() if any(vals.get(k, 0) > 0 for k in keys))


def judge(files: DataFrame, cfg: FilterConfig, *, sql_measures: bool = False, rules: Collection[Rule] = RULES,
          measures: Collection[Measure] = MEASURES) -> DataFrame:
    """`files` rows with measures and verdicts (the composition the pipeline uses). `sql_measures` measures with
    `add_measures_sql` (the reference) instead of the Arrow UDF. `rules`/`measures`: what to judge with (a rule
    defined elsewhere is passed here, with any new measure it reads)."""
    check_declarations(rules, measures)
    defaults, langs = cfg.thresholds(rules)
    kw = dict(measures=measures, autogen_markers=cfg.autogen_markers, autogen_head_chars=cfg.autogen_head_chars)
    if sql_measures:
        measured = files.transform(add_measures_sql, **kw)
    else:
        only = {m.name: ls for m in measures if (ls := measured_languages(m, defaults, langs)) is not None}
        measured = files.transform(add_measures, only_languages=only, **kw)
    active = [r for r in rules if r.enabled_by is None or getattr(cfg, r.enabled_by)]
    return measured.transform(apply_rules, defaults=defaults, languages=langs, rules=active)
