"""Language identification where the extension misleads: accuracy of `codemill.languages.detect_language` (go-enry
plus our fallbacks) vs the extension map and vs Pygments' `guess_lexer`, on a labelled set of ambiguous files.

    .venv/bin/python bench/langid.py [--per-group 60] [--seed 24]

The labelled set: real files of this machine, labelled by where they come from, up to `--per-group` per group:
- `.h` C: /usr/include/*.h; `.h` C++: libstdc++'s /usr/include/c++/*/bits/*.h and the C++ bindings directly
  under /usr/include (names with `++`, ncurses' `cursesapp.h` ... `etip.h`);
- `.pl` Perl: /usr/share/perl*/**/*.pl; `.m` Objective-C: the .m files of Go's and CMake's sources;
- no extension, C++: libstdc++'s extension-less headers (`vector`, `map`, ...);
- no extension, scripts: /usr/bin and /usr/sbin files with a `#!` line, labelled by their interpreter (python,
  perl, sh/bash -> shell);
plus the hand-written files of tests/fixtures/languages.py (the classes this machine has no real files of:
MATLAB, Prolog, Qt Linguist `.ts`, TypeScript, Objective-C headers). Accuracy is reported per group and overall;
`accuracy` in RESULT is that of `detect_language` over all files, `extension_accuracy` and `pygments_accuracy` the
baselines on the same files; `files_per_s` the identification speed (one core, after a warm-up). Ends with one
`RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != str(REPO / "bench")]
sys.path.insert(0, str(REPO))

from codemill.languages import canonical_lang, detect_language, lang_from_path  # noqa: E402
from tests.fixtures.languages import SAMPLES  # noqa: E402

INTERPRETERS = {"python": "python", "python3": "python", "perl": "perl", "sh": "shell", "bash": "shell",
                "dash": "shell"}
# C++ headers directly under /usr/include (ncurses' C++ binding): the rest of that folder is C.
CPP_TOP_LEVEL = {"cursesapp.h", "cursesf.h", "cursesm.h", "cursesp.h", "cursesw.h", "cursslk.h", "etip.h"}
# Pygments lexer names -> canonical
PYGMENTS = {"c++": "cpp", "objective-c": "objective-c", "matlab": "matlab", "prolog": "prolog", "perl": "perl",
            "typescript": "typescript", "xml": "xml", "python": "python", "bash": "shell", "makefile": "makefile",
            "docker": "dockerfile", "javascript": "javascript", "c": "c", "perl6": "raku"}


def _read(p: Path) -> str | None:
    try:
        if not p.is_file() or p.is_symlink() or p.stat().st_size > 500_000:
            return None
        return p.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _shebang_label(text: str) -> str | None:
    if not text.startswith("#!"):
        return None
    words = text.split("\n", 1)[0][2:].split()
    if not words:
        return None
    prog = os.path.basename(words[1] if os.path.basename(words[0]) == "env" and len(words) > 1 else words[0])
    prog = prog.rstrip("0123456789.") or prog
    return INTERPRETERS.get(prog)


def labelled_set(per_group: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(group, path, content, label)."""
    rng = random.Random(seed)
    groups: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for p in sorted(Path("/usr/include").glob("*.h")):  # C, but for the C++ bindings that live there too
        groups[".h C++" if "++" in p.name or p.name in CPP_TOP_LEVEL else ".h C"].append(
            (str(p), "cpp" if "++" in p.name or p.name in CPP_TOP_LEVEL else "c"))
    for p in sorted(Path("/usr/include").glob("c++/*/bits/*.h")):
        groups[".h C++"].append((str(p), "cpp"))
    for p in sorted(Path("/usr/include").glob("c++/*/*")):
        if "." not in p.name:
            groups["no extension C++"].append((str(p), "cpp"))
    for root in sorted(Path("/usr/share").glob("perl*")):
        for p in sorted(root.rglob("*.pl")):
            groups[".pl Perl"].append((str(p), "perl"))
    for root in ("/usr/local/go/src", "/usr/share"):
        for p in sorted(Path(root).rglob("*.m")) if os.path.isdir(root) else []:
            groups[".m Objective-C"].append((str(p), "objective-c"))
    for d in ("/usr/bin", "/usr/sbin"):
        for p in sorted(Path(d).iterdir()):
            if "." not in p.name and not p.is_symlink():
                text = _read(p)
                label = _shebang_label(text) if text else None
                if label:
                    groups["no extension script"].append((str(p), label))
    out = []
    for group, items in sorted(groups.items()):
        rng.shuffle(items)
        n = 0
        for path, label in items:
            text = _read(Path(path))
            if text and text.strip():
                out.append((group, path, text, label))
                n += 1
            if n >= per_group:
                break
    for path, text, label in SAMPLES:
        ext = path.rpartition(".")[2] if "." in path else ""
        out.append((f"hand-written .{ext or '(none)'}", path, text, label))
    return out


def pygments_guess(path: str, text: str) -> str:
    from pygments.lexers import guess_lexer_for_filename
    from pygments.util import ClassNotFound

    try:
        lexer = guess_lexer_for_filename(os.path.basename(path), text[:65536])
    except ClassNotFound:
        try:
            from pygments.lexers import guess_lexer

            lexer = guess_lexer(text[:65536])
        except ClassNotFound:
            return "unknown"
    name = lexer.name.lower()
    return PYGMENTS.get(name, canonical_lang(name) or "unknown")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-group", type=int, default=60)
    ap.add_argument("--seed", type=int, default=24)
    args = ap.parse_args(argv)
    data = labelled_set(args.per_group, args.seed)
    methods = {"detect_language": lambda p, t: detect_language(os.path.basename(p), t),
               "extension": lambda p, t: lang_from_path(os.path.basename(p)), "pygments": pygments_guess}
    right: dict[str, Counter] = {m: Counter() for m in methods}
    total: Counter = Counter()
    misses: list[str] = []
    for group, path, text, label in data:
        total[group] += 1
        for m, fn in methods.items():
            got = fn(path, text)
            right[m][group] += got == label
            if m == "detect_language" and got != label and len(misses) < 15:
                misses.append(f"{path}: {label} -> {got}")
    detect_language("warm.h", "int x;")
    t0 = time.perf_counter()
    for _, path, text, _ in data:
        detect_language(os.path.basename(path), text)
    fps = len(data) / (time.perf_counter() - t0)

    print(f"{'group':<26} {'files':>5} {'detect':>7} {'ext':>6} {'pygments':>9}")
    for g in sorted(total):
        print(f"{g:<26} {total[g]:>5} " + " ".join(f"{right[m][g] / total[g]:>7.3f}" for m in methods))
    n = sum(total.values())
    acc = {m: sum(right[m].values()) / n for m in methods}
    print(f"{'all':<26} {n:>5} " + " ".join(f"{acc[m]:>7.3f}" for m in methods))
    if misses:
        print("detect_language misses:", *misses, sep="\n  ")
    result = {"accuracy": round(acc["detect_language"], 4), "extension_accuracy": round(acc["extension"], 4),
              "pygments_accuracy": round(acc["pygments"], 4), "files": n, "files_per_s": round(fps, 1),
              "per_group": {g: {"files": total[g], **{m: round(right[m][g] / total[g], 3) for m in methods}}
                            for g in sorted(total)}}
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
