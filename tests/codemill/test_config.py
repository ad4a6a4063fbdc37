"""Tests for codemill/config.py: YAML + command line, type and semantic errors naming the key, hashing."""

from __future__ import annotations

import dataclasses

import pytest

from codemill.config import ConfigError, config_hash, load_config, parse_config, to_dict


@dataclasses.dataclass
class FilterCfg:
    max_line_length: int = 1000
    langs: list[str] = dataclasses.field(default_factory=lambda: ["python", "java"])
    min_alpha: float = 0.25

    def validate(self) -> list[str]:
        problems = []
        if self.max_line_length <= 0:
            problems.append(f"max_line_length: must be positive, got {self.max_line_length}")
        if not 0 <= self.min_alpha <= 1:
            problems.append(f"min_alpha: must lie in [0, 1], got {self.min_alpha}")
        return problems


@dataclasses.dataclass
class JobCfg:
    lake: str = "lake"
    workers: int = 2
    filter: FilterCfg = dataclasses.field(default_factory=FilterCfg)

    def validate(self) -> list[str]:
        return [] if self.lake else ["lake: must name the lake root, e.g. /data/lake"]


def test_defaults_yaml_and_command_line_in_order(tmp_path):
    assert parse_config(JobCfg, []) == JobCfg()
    base = tmp_path / "base.yaml"
    base.write_text("lake: /data/lake\nfilter:\n  max_line_length: 500\n  langs: [go]\n")
    local = tmp_path / "local.yaml"
    local.write_text("workers: 8\nfilter:\n  max_line_length: 200\n")
    cfg = parse_config(JobCfg, ["--config", str(base), "--config", str(local), "--filter.min_alpha", "0.5"])
    assert cfg == JobCfg("/data/lake", 8, FilterCfg(200, ["go"], 0.5))
    assert isinstance(cfg.filter, FilterCfg)
    # The command line wins over files given before it.
    assert parse_config(JobCfg, ["--config", str(base), "--filter.max_line_length", "7"]).filter.max_line_length == 7


def test_type_errors_and_unknown_keys_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="filter.max_line_length"):
        parse_config(JobCfg, ["--filter.max_line_length", "lots"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("filter:\n  max_line_lenght: 5\n")
    with pytest.raises(ConfigError, match="max_line_lenght"):
        parse_config(JobCfg, ["--config", str(bad)])
    with pytest.raises(ConfigError, match="nope"):
        parse_config(JobCfg, ["--nope", "1"])
    with pytest.raises(ConfigError, match="missing.yaml"):
        parse_config(JobCfg, ["--config", str(tmp_path / "missing.yaml")])


def test_semantic_problems_are_collected_once_with_dotted_keys():
    with pytest.raises(ConfigError) as info:
        parse_config(JobCfg, ["--lake", "", "--filter.max_line_length", "0", "--filter.min_alpha", "2"])
    assert info.value.problems == [
        "lake: must name the lake root, e.g. /data/lake",
        "filter.max_line_length: must be positive, got 0",
        "filter.min_alpha: must lie in [0, 1], got 2.0",
    ]
    assert str(info.value).startswith("invalid configuration:\n  - lake:")


def test_load_config_and_hash(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("workers: 3\n")
    cfg = load_config(JobCfg, path, overrides={"filter.langs": ["rust", "go"], "lake": "/l"})
    assert cfg == JobCfg("/l", 3, FilterCfg(langs=["rust", "go"]))
    assert to_dict(cfg)["filter"] == {"max_line_length": 1000, "langs": ["rust", "go"], "min_alpha": 0.25}
    assert config_hash(cfg) == config_hash(load_config(JobCfg, path, overrides={"lake": "/l",
                                                                                "filter.langs": ["rust", "go"]}))
    assert config_hash(cfg) != config_hash(dataclasses.replace(cfg, workers=4))
    assert len(config_hash(cfg)) == 16


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit):
        parse_config(JobCfg, ["--help"])
    out = capsys.readouterr().out
    for key in ("--config", "--lake", "--workers", "--filter.max_line_length", "--filter.langs"):
        assert key in out
