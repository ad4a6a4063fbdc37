"""Versioned prompt templates for synthetic data (`conf/synth/prompts/<id>.yaml`).

A template has an `id`, an integer `version`, a `system` and a `user` message with the placeholders `{language}`
(display name, "Python"), `{lang}` (the canonical code, also the code fence's info string) and `{seed}` (the seed
snippet or file). Both are rendered with the model's own chat template by the engine (`Engine.render_chat`).
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

from codemill.config import CONF_DIR

PROMPTS_DIR = CONF_DIR / "synth" / "prompts"
PLACEHOLDERS = {"language", "lang", "seed"}
DISPLAY_NAMES = {
    "python": "Python", "java": "Java", "cpp": "C++", "c": "C", "javascript": "JavaScript", "php": "PHP",
    "csharp": "C#", "go": "Go", "typescript": "TypeScript", "sql": "SQL", "ruby": "Ruby", "rust": "Rust",
    "jupyter": "Python (Jupyter)", "scala": "Scala", "kotlin": "Kotlin", "shell": "Shell", "dart": "Dart",
    "swift": "Swift",
}


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: int
    system: str
    user: str

    def messages(self, *, lang: str, seed: str) -> list[dict[str, str]]:
        values = {"language": display_name(lang), "lang": lang, "seed": seed}
        out = []
        if self.system:
            out.append({"role": "system", "content": _fill(self.system, values)})
        out.append({"role": "user", "content": _fill(self.user, values)})
        return out


def _fill(text: str, values: dict[str, str]) -> str:
    # Placeholders are substituted in one pass so that braces inside the seed code are never interpreted.
    out = []
    for literal, field, _, _ in string.Formatter().parse(text):
        out.append(literal)
        if field is not None:
            out.append(values[field])
    return "".join(out)


def display_name(lang: str) -> str:
    return DISPLAY_NAMES.get(lang, lang.capitalize())


def template_problems(data: dict, where: str) -> list[str]:
    problems = []
    for key in ("id", "version", "user"):
        if key not in data:
            problems.append(f"{where}: missing key {key!r}")
    if problems:
        return problems
    if not isinstance(data["version"], int) or data["version"] < 1:
        problems.append(f"{where}: version must be a positive integer")
    for key in ("system", "user"):
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(str(data.get(key) or "")) if f is not None}
        except ValueError as exc:
            problems.append(f"{where}: {key}: {exc} (write literal braces as {{{{ and }}}})")
            continue
        unknown = fields - PLACEHOLDERS
        if unknown:
            problems.append(f"{where}: {key}: unknown placeholders {sorted(unknown)}; use {sorted(PLACEHOLDERS)}")
    if "{seed}" not in str(data["user"]):
        problems.append(f"{where}: user: must contain {{seed}}")
    return problems


def template_path(name: str) -> Path:
    """A template id (looked up in conf/synth/prompts/) or a path to a YAML file."""
    path = Path(name)
    return path if path.suffix in {".yaml", ".yml"} else PROMPTS_DIR / f"{name}.yaml"


def load_template(name: str) -> PromptTemplate:
    import yaml

    path = template_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {name!r}: no file {path}")
    data = yaml.safe_load(path.read_text())
    problems = template_problems(data if isinstance(data, dict) else {}, str(path))
    if problems:
        raise ValueError("; ".join(problems))
    return PromptTemplate(str(data["id"]), int(data["version"]), str(data.get("system") or ""), str(data["user"]))
