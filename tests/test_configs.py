"""Every YAML file under conf/ is parsed by the job that reads it, with that job's own config system.

A file no handler claims fails `test_every_yaml_under_conf_has_a_parser`, so a new config cannot ship unchecked.
Parsing means: jsonargparse type checks (unknown keys are errors) plus each dataclass's `validate`, the same path
`parse_config` takes when a job starts. The only problem tolerated is a missing optional runtime (vLLM) that the
shipped GPU configs name and this CPU machine lacks.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from codemill.benchmarks import load_catalogue
from codemill.config import CONF_DIR, REPO_ROOT, ConfigError, load_config
from spark_jobs.filter import FilterConfig
from spark_jobs.licences import LicencesConfig
from spark_jobs.near_dedup import NearDedupConfig
from spark_jobs.pipeline import PipelineConfig
from spark_jobs.redact import RedactConfig
from spark_jobs.redact_detectors import KINDS
from spark_jobs.tokenize_shards import TokenizeConfig, shipped_phases
from synth.generate import SynthConfig
from synth.prompts import load_template
from trainer.ablate.config import AblationConfig
from trainer.annotator import AnnotatorCLI, AnnotatorData, AnnotatorModel
from trainer.cli import TrainCLI
from trainer.data import ShardDataModule
from trainer.evaluation.run import EvalConfig
from trainer.model import CodeLM

OPTIONAL_RUNTIME = "vllm is not installed"


def _tolerating_missing_vllm(fn):
    try:
        return fn()
    except ConfigError as err:
        rest = [p for p in err.problems if OPTIONAL_RUNTIME not in p]
        if rest:
            raise
        return None


def _pipeline(path: Path):
    # Overlays are loaded over the whole recipe, as their headers say; the recipe itself stands alone. `--input` is
    # always given on the command line (any folder of code will do for parsing).
    files = [path] if path.name == "pipeline.yaml" else [CONF_DIR / "spark" / "pipeline.yaml", path]
    for stages in ("curation", "all"):
        overrides = {"stages": stages, "input": str(REPO_ROOT / "spark_jobs")}
        cfg = _tolerating_missing_vllm(lambda o=overrides: load_config(PipelineConfig, *files, overrides=o))
        assert cfg is None or cfg.stages, path


def _near_dedup(path: Path):
    assert load_config(NearDedupConfig, path).num_perm > 0


def _redact(path: Path):
    cfg = load_config(RedactConfig, path)
    assert not cfg.validate() and sorted(cfg.rules.kinds) == sorted(KINDS)


def _licences(path: Path):
    cfg = load_config(LicencesConfig, path)
    assert not cfg.validate() and "mit" in cfg.allow


def _tokenize(path: Path):
    files = [path] if path.name == "tokenize.yaml" else [CONF_DIR / "spark" / "tokenize.yaml", path]
    assert [p.name for p in load_config(TokenizeConfig, *files).phases] == ["phase1", "phase2", "phase3"]


def _phases(path: Path):
    assert path == CONF_DIR / "spark" / "phases.yaml"
    assert [p.name for p in shipped_phases()] == ["phase1", "phase2", "phase3"]


def _filters(path: Path):
    assert FilterConfig(rules_file=str(path)).validate() == []


def _benchmarks(path: Path):
    catalogue = load_catalogue(path)
    assert catalogue and all(b.paths() for b in catalogue), "every catalogued benchmark has its files"


def _synth(path: Path):
    cfg = _tolerating_missing_vllm(lambda: load_config(SynthConfig, path))
    assert cfg is None or cfg.engine.kind in {"transformers", "vllm"}


def _prompt(path: Path):
    template = load_template(str(path))
    assert template.id == path.stem and template.version >= 1


def _eval(path: Path):
    cfg = load_config(EvalConfig, path, overrides={"model": "embedded"})
    assert cfg.benchmarks


def _lightning(cli_cls, model_cls, data_cls, path: Path):
    """LightningCLI's own parse (types, links, unknown keys) without building the model or touching data."""

    class ParseOnly(cli_cls):
        def instantiate_classes(self):
            pass

    cli = ParseOnly(model_cls, data_cls, args=["--config", str(path)], run=False, save_config_callback=None)
    assert cli.config.trainer is not None


def _train(path: Path):

    _lightning(TrainCLI, CodeLM, ShardDataModule, path)


def _annotator(path: Path):

    _lightning(AnnotatorCLI, AnnotatorModel, AnnotatorData, path)


def _ablate(path: Path):
    cfg = load_config(AblationConfig, path)
    assert cfg.variants and all(sum(s.tokens for s in v.stages) == cfg.budget_tokens for v in cfg.variants)


HANDLERS = {
    "spark/pipeline.yaml": _pipeline,
    "spark/pipeline-local.yaml": _pipeline,
    "spark/demo.yaml": _pipeline,
    "spark/near_dedup.yaml": _near_dedup,
    "spark/redact.yaml": _redact,
    "spark/licences.yaml": _licences,
    "spark/tokenize*.yaml": _tokenize,
    "spark/phases.yaml": _phases,
    "spark/filters.yaml": _filters,
    "spark/benchmarks.yaml": _benchmarks,
    "synth/prompts/*.yaml": _prompt,
    "synth/*.yaml": _synth,
    "eval/*.yaml": _eval,
    "train/*.yaml": _train,
    "annotator/*.yaml": _annotator,
    "ablate/*.yaml": _ablate,
}
ALL = sorted(p.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*.y*ml"))


def _handler(rel: str):
    # fnmatch's `*` crosses `/`, so prompts are matched before the synth folder's own files.
    matches = [h for pattern, h in HANDLERS.items() if fnmatch.fnmatch(rel, pattern)]
    if rel.startswith("synth/prompts/"):
        matches = [_prompt]
    return matches


def test_every_yaml_under_conf_has_a_parser():
    assert len(ALL) > 20
    unclaimed = [rel for rel in ALL if len(_handler(rel)) != 1]
    assert not unclaimed, f"add a parser to tests/test_configs.py for {unclaimed}"


@pytest.mark.parametrize("rel", ALL)
def test_shipped_config_parses(rel):
    (handler,) = _handler(rel)
    handler(CONF_DIR / rel)


def test_a_wrong_key_in_a_shipped_config_is_an_error(tmp_path):
    bad = tmp_path / "near_dedup.yaml"
    bad.write_text((CONF_DIR / "spark" / "near_dedup.yaml").read_text() + "\nnum_prem: 64\n")
    with pytest.raises(ConfigError, match="num_prem"):
        _near_dedup(bad)
    train = tmp_path / "train.yaml"
    train.write_text((CONF_DIR / "train" / "debug-phase1.yaml").read_text() + "\nunknown_section: 1\n")
    with pytest.raises(SystemExit):
        _train(train)
