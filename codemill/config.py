"""One configuration system for every codemill job.

Each job declares its settings as a dataclass. `parse_config` builds a jsonargparse parser from it (the same
library LightningCLI uses for the trainer), so every job accepts:

    python -m spark_jobs.pipeline --config conf/spark/pipeline.yaml --lake /data/lake --filter.max_line_length 2000

- YAML files (`--config FILE`, repeatable; later files win), then command-line overrides of any key;
- type checking by jsonargparse, whose errors name the offending key;
- semantic checks: a config dataclass may define `validate(self) -> list[str]`, returning messages that start with
  the dotted key to fix. All messages of all nested sections are collected and raised once as `ConfigError`,
  before the job touches any data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


def repo_path(path: str) -> str:
    """A relative local path that does not exist from the working directory, taken against the repository root
    (the shipped `data/` and `conf/` files, whichever folder a job is started from); anything else unchanged."""
    import glob
    import os

    if "://" in path or os.path.isabs(path) or glob.glob(path):
        return path
    return str(REPO_ROOT / path)


class ConfigError(ValueError):
    """Raised once with every problem found in a configuration, each naming its key."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


def collect_problems(cfg: Any, prefix: str = "") -> list[str]:
    """Runs `validate()` on `cfg` and on every nested dataclass, prefixing messages with the nested key. A config
    with a `validated_sections()` method names the nested sections to check (a pipeline: those of the stages it
    runs); the others are left alone."""
    problems: list[str] = []
    if not dataclasses.is_dataclass(cfg):
        return problems
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        problems.extend(f"{prefix}{p}" for p in validate())
    sections = getattr(cfg, "validated_sections", None)
    wanted = set(sections()) if callable(sections) else None
    for field in dataclasses.fields(cfg):
        if wanted is not None and field.name not in wanted:
            continue
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value):
            problems.extend(collect_problems(value, f"{prefix}{field.name}."))
    return problems


def make_parser(config_cls: type, *, prog: str | None = None, description: str | None = None,
                default_config_files: Sequence[str | Path] = ()):
    """A jsonargparse parser for `config_cls` with a `--config` option for YAML files."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog=prog,
        description=description,
        default_config_files=[str(p) for p in default_config_files],
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file(s); later ones win")
    parser.add_class_arguments(config_cls, fail_untyped=True, sub_configs=True)
    return parser


def parse_config(config_cls: type[T], argv: Sequence[str] | None = None, *, prog: str | None = None,
                 description: str | None = None, default_config_files: Sequence[str | Path] = ()) -> T:
    """Parses YAML files and command-line overrides into a validated `config_cls` instance.

    Raises `ConfigError` naming every key to fix; `--help` prints every key with its default.
    """
    from jsonargparse import ArgumentError

    parser = make_parser(config_cls, prog=prog, description=description,
                         default_config_files=default_config_files)
    try:
        ns = parser.parse_args(list(argv) if argv is not None else None)
    except ArgumentError as exc:  # type errors, unknown keys, unreadable YAML
        raise ConfigError([str(exc)]) from None
    ns.pop("config", None)
    ns.pop("__default_config__", None)
    cfg = parser.instantiate_classes(ns)
    cfg_dict = cfg.as_dict() if hasattr(cfg, "as_dict") else dict(cfg)
    obj = _build(config_cls, cfg_dict)
    problems = collect_problems(obj)
    if problems:
        raise ConfigError(problems)
    return obj


def load_config(config_cls: type[T], *paths: str | Path, overrides: dict[str, Any] | None = None) -> T:
    """Programmatic form of `parse_config`: YAML files, then dotted-key overrides (`{"filter.max_line_length": 9}`)."""
    argv: list[str] = []
    for p in paths:
        argv += ["--config", str(p)]
    for key, value in (overrides or {}).items():
        argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return parse_config(config_cls, argv)


def _build(cls: type, values: Any) -> Any:
    """Turns jsonargparse's nested dicts back into (nested) dataclass instances."""
    if dataclasses.is_dataclass(values):
        return values
    if not (dataclasses.is_dataclass(cls) and isinstance(values, dict)):
        return values
    import typing

    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        kwargs[field.name] = _build(hints.get(field.name, Any), values[field.name])
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a config dataclass (paths as strings)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def config_hash(cfg: Any) -> str:
    """Stable short hash of a config, recorded in every commit's lineage."""
    payload = json.dumps(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
