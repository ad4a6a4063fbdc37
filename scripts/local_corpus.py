"""Builds a corpus of real code found on this machine: a folder of repositories for `spark_jobs.ingest`.

    python -m scripts.local_corpus --out demo_out/corpus --mb 30

Each top-level folder of the output is one repository, taken from code that ships with the machine:
the Python standard library and installed packages (Python), the JDK's `src.zip` (Java), `/usr/include`
(C and C++ headers), npm's own sources (JavaScript), and shell scripts under `/usr/bin` and `/usr/share`.
Languages are interleaved so any size keeps several languages. Deterministic for a given size.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

from codemill.config import parse_config

SKIP_DIRS = {"__pycache__", "test", "tests", "idlelib", "site-packages", "node_modules", ".git", "lib2to3"}
KEEP_EXT = {".py", ".java", ".h", ".hpp", ".c", ".cc", ".cpp", ".js", ".mjs", ".cjs", ".sh", ".json", ".md",
            ".ts", ".go", ".rs", ".rb", ".pyi", ".toml", ".yaml", ".yml", ".html", ".css"}


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix in KEEP_EXT and path.is_file() and not path.is_symlink():
                yield path


def _python_repos() -> Iterator[tuple[str, Path, Path]]:
    """(repo name, source folder, base) for stdlib packages and site-packages distributions."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for child in sorted(stdlib.iterdir()):
        if child.is_dir() and child.name not in SKIP_DIRS and (child / "__init__.py").exists():
            yield f"cpython-{child.name}", child, child
    site = Path(sysconfig.get_paths()["purelib"])
    for child in sorted(site.iterdir()):
        if child.is_dir() and (child / "__init__.py").exists() and not child.name.startswith("_"):
            yield f"py-{child.name}", child, child


def _dir_repos(roots: list[tuple[str, Path]]) -> Iterator[tuple[str, Path, Path]]:
    for prefix, root in roots:
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                yield f"{prefix}-{child.name}", child, child


def _jdk_src() -> Path | None:
    for jvm in sorted(Path("/usr/lib/jvm").glob("*/lib/src.zip")):
        return jvm
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "lib/src.zip").exists():
        return Path(java_home) / "lib/src.zip"
    return None


def _copy_tree(src: Path, dst: Path, budget: int) -> int:
    used = 0
    for path in _walk(src):
        size = path.stat().st_size
        if size > 1_000_000 or used + size > budget:
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        used += size
    return used


def _copy_java(zip_path: Path, out: Path, budget: int) -> int:
    """One repository per Java package folder of the JDK sources (java.base/java/util, ...)."""
    used = 0
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".java") and n.startswith("java.base/java/"))
        for name in names:
            info = zf.getinfo(name)
            if used + info.file_size > budget:
                break
            parts = name.split("/")
            repo = "openjdk-" + "-".join(parts[1:3])
            target = out / repo / "/".join(parts[3:])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
            used += info.file_size
    return used


def _copy_scripts(out: Path, budget: int) -> int:
    """Shell scripts of the base system (files under /usr/bin starting with a sh/bash shebang)."""
    used = 0
    for path in sorted(Path("/usr/bin").iterdir()):
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_size > 200_000:
                continue
            head = path.read_bytes()[:64]
        except OSError:
            continue
        if head.startswith((b"#!/bin/sh", b"#! /bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash")):
            if used + path.stat().st_size > budget:
                break
            target = out / "debian-bin-scripts" / f"{path.name}.sh"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            used += path.stat().st_size
    return used


def build_local_corpus(out: str | Path, *, mb: float = 30.0) -> dict[str, int]:
    """Fills `out` with about `mb` MB of repositories; returns bytes per source kind. Replaces `out`."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    budget = int(mb * 1_000_000)
    # Shares of the budget per source; unused shares flow to Python, which always exists.
    shares = {"java": 0.2, "c": 0.15, "javascript": 0.15, "shell": 0.03}
    used: dict[str, int] = {}
    jdk = _jdk_src()
    used["java"] = _copy_java(jdk, out, int(budget * shares["java"])) if jdk else 0
    c_repos = _dir_repos([("usr-include", Path("/usr/include"))])
    used["c"] = _fill(c_repos, out, int(budget * shares["c"]))
    js_roots = [("npm", p) for p in (Path("/usr/lib/node_modules"), Path("/usr/local/lib/node_modules"))]
    used["javascript"] = _fill(_dir_repos(js_roots), out, int(budget * shares["javascript"]))
    used["shell"] = _copy_scripts(out, int(budget * shares["shell"]))
    used["python"] = _fill(_python_repos(), out, budget - sum(used.values()))
    return used


def _fill(repos: Iterator[tuple[str, Path, Path]], out: Path, budget: int, per_repo: int = 2_000_000) -> int:
    used = 0
    for name, src, _ in repos:
        if used >= budget:
            break
        used += _copy_tree(src, out / name, min(per_repo, budget - used))
    return used


@dataclasses.dataclass
class CorpusConfig:
    # Output folder (replaced).
    out: str = "demo_out/corpus"
    # Approximate size in MB.
    mb: float = 30.0


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(CorpusConfig, argv, prog="python -m scripts.local_corpus", description=__doc__.splitlines()[0])
    used = build_local_corpus(cfg.out, mb=cfg.mb)
    total = sum(used.values())
    print(f"corpus at {cfg.out}: {total / 1e6:.1f} MB ", {k: round(v / 1e6, 1) for k, v in used.items()},
          file=sys.stderr)


if __name__ == "__main__":
    main()
