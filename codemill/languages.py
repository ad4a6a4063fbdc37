"""Language detection from file extension and file name.

`lang` values follow docs/CONTRACTS.md: lowercase canonical names. The first 18 are the languages of the
Arctic-SnowCoder paper (§2.1, The Stack v1 subset); the rest are common languages and data/markup formats that a
raw tree contains, so that filters and statistics can treat them by name instead of as "unknown".
"""

from __future__ import annotations

import os
import re

PAPER_LANGUAGES = (
    "python", "java", "cpp", "c", "javascript", "php", "csharp", "go", "typescript", "sql", "ruby", "rust",
    "jupyter", "scala", "kotlin", "shell", "dart", "swift",
)

EXTENSIONS: dict[str, str] = {
    # the paper's 18
    "py": "python", "pyi": "python", "pyw": "python", "pyx": "python",
    "java": "java",
    "cc": "cpp", "cpp": "cpp", "cxx": "cpp", "c++": "cpp", "hpp": "cpp", "hh": "cpp", "hxx": "cpp", "h++": "cpp",
    "ipp": "cpp", "tcc": "cpp", "inl": "cpp",
    "c": "c", "h": "c",
    "js": "javascript", "mjs": "javascript", "cjs": "javascript", "jsx": "javascript",
    "php": "php", "phtml": "php", "php3": "php", "php4": "php", "php5": "php",
    "cs": "csharp", "csx": "csharp",
    "go": "go",
    "ts": "typescript", "tsx": "typescript", "mts": "typescript", "cts": "typescript",
    "sql": "sql",
    "rb": "ruby", "rake": "ruby", "gemspec": "ruby",
    "rs": "rust",
    "ipynb": "jupyter",
    "scala": "scala", "sc": "scala",
    "kt": "kotlin", "kts": "kotlin",
    "sh": "shell", "bash": "shell", "zsh": "shell", "ksh": "shell",
    "dart": "dart",
    "swift": "swift",
    # other programming languages
    "m": "objective-c", "mm": "objective-cpp", "pl": "perl", "pm": "perl", "lua": "lua", "r": "r",
    "jl": "julia", "hs": "haskell", "ml": "ocaml", "mli": "ocaml", "ex": "elixir", "exs": "elixir",
    "erl": "erlang", "clj": "clojure", "groovy": "groovy", "gradle": "groovy", "f90": "fortran", "f": "fortran",
    "for": "fortran", "vb": "visual-basic", "ps1": "powershell", "asm": "assembly", "s": "assembly",
    "vue": "vue", "svelte": "svelte", "zig": "zig", "nim": "nim", "d": "d", "pas": "pascal", "tcl": "tcl",
    "el": "emacs-lisp", "lisp": "common-lisp", "scm": "scheme", "rkt": "racket", "cmake": "cmake",
    "proto": "protocol-buffer", "cu": "cuda", "cuh": "cuda", "glsl": "glsl", "tex": "tex", "vim": "vim-script",
    "awk": "awk", "m4": "m4", "makefile": "makefile", "mk": "makefile", "dockerfile": "dockerfile",
    # markup, style, data
    "html": "html", "htm": "html", "xhtml": "html", "css": "css", "scss": "scss", "less": "less",
    "md": "markdown", "markdown": "markdown", "rst": "restructuredtext", "txt": "text",
    "json": "json", "jsonl": "json", "yaml": "yaml", "yml": "yaml", "toml": "toml", "xml": "xml", "xsd": "xml",
    "xsl": "xml", "svg": "xml", "csv": "csv", "tsv": "csv", "ini": "ini", "cfg": "ini",
}

FILENAMES: dict[str, str] = {
    "makefile": "makefile", "gnumakefile": "makefile", "dockerfile": "dockerfile", "cmakelists.txt": "cmake",
    "rakefile": "ruby", "gemfile": "ruby", "vagrantfile": "ruby", "jenkinsfile": "groovy",
    "build.gradle": "groovy", "sconstruct": "python", "sconscript": "python", ".bashrc": "shell",
    ".profile": "shell", ".zshrc": "shell", "configure": "shell",
}

# Record-level language names (The Stack's `lang`, GitHub linguist names) mapped to the canonical ones.
ALIASES: dict[str, str] = {
    "c++": "cpp", "c#": "csharp", "c-sharp": "csharp", "js": "javascript", "ts": "typescript", "py": "python",
    "bash": "shell", "sh": "shell", "jupyter notebook": "jupyter", "jupyter-notebook": "jupyter", "golang": "go",
    "objective-c++": "objective-cpp", "batchfile": "batch", "yml": "yaml", "rs": "rust", "rb": "ruby",
    "kt": "kotlin", "cs": "csharp", "cpp": "cpp", "visual basic": "visual-basic", "emacs lisp": "emacs-lisp",
    "common lisp": "common-lisp", "protocol buffer": "protocol-buffer", "restructuredtext": "restructuredtext",
}


def canonical_lang(name: str | None) -> str | None:
    """A record's own language name in the canonical lowercase form (None stays None)."""
    if name is None:
        return None
    key = str(name).strip().lower()
    if not key:
        return None
    return ALIASES.get(key, key.replace(" ", "-"))


def lang_from_path(path: str | None) -> str:
    """Language from the file name, then the extension; `unknown` when neither is known."""
    if not path:
        return "unknown"
    base = os.path.basename(path).lower()
    if base in FILENAMES:
        return FILENAMES[base]
    if base.startswith("dockerfile"):
        return "dockerfile"
    _, dot, ext = base.rpartition(".")
    if not dot:
        return "unknown"
    return EXTENSIONS.get(ext, "unknown")


# ---------------------------------------------------------------------- content-based identification
# Extensions that several languages share, and the languages each may be (canonical names). A file with one of
# these, or with no extension at all, is identified from its content (`detect_language`); others keep their
# extension's language, which is right for all but a negligible share of files.
AMBIGUOUS: dict[str, tuple[str, ...]] = {
    "h": ("c", "cpp", "objective-c"),
    "m": ("objective-c", "matlab"),
    "pl": ("perl", "prolog"),
    "ts": ("typescript", "xml"),  # Qt Linguist translation files are XML
}
# Bytes of a file the identification reads (go-enry's heuristics and shebang test look at the head of a file).
PROBE_BYTES = 65536

_OBJC = re.compile(r"^\s*(?:@interface|@implementation|@protocol|@end\b|@property|#import\s)", re.M)
_CPP = re.compile(r"^\s*(?:namespace\b|template\s*<|class\s+\w+\s*[:{]|#include\s*<(?:[a-z_]+)>|using\s+namespace)"
                  r"|\bstd::|\w+::\w+", re.M)
_C_LIKE = re.compile(r"^\s*#\s*(?:include|ifdef|ifndef|define|if)\b|^[\w \t*]+\([^)]*\)\s*\{\s*$|/\*", re.M)
_PROLOG = re.compile(r":-|^\s*[a-z]\w*\([^)]*\)\s*\.\s*$", re.M)


def needs_detection(path: str | None) -> bool:
    """True when the extension does not settle the language: a shared extension or no extension at all."""
    if not path:
        return False
    base = os.path.basename(path).lower()
    _, dot, ext = base.rpartition(".")
    return (dot and ext in AMBIGUOUS) or (not dot and base not in FILENAMES)


def detect_language(path: str, content: str | None) -> str:
    """The language of a file from its name and content: go-enry (GitHub linguist's filename, shebang, modeline,
    extension and content heuristics and its classifier, ported to Go; the `enry` bindings), limited to the
    candidates of a shared extension; where enry is unsure or answers outside them, a few content rules of our own
    (below). Files whose extension is not shared keep `lang_from_path`."""
    base = os.path.basename(path or "")
    by_path = lang_from_path(path)
    if not needs_detection(path) or not content:
        return by_path
    data = content[:PROBE_BYTES].encode("utf-8", "replace")
    ext = base.lower().rpartition(".")[2] if "." in base else ""
    if ext in AMBIGUOUS:
        # linguist's disambiguation heuristics only: its classifier (the last step of `get_language`) answers Prolog
        # for Perl data files and M/Mercury for MATLAB (bench/langid.py), where our rules do better
        found = _enry_name(base, data, heuristics_only=True)
        return found if found in AMBIGUOUS[ext] else _fallback(ext, content[:PROBE_BYTES])
    found = _enry_name(base, data)
    # enry's "Text" for prose without an extension (LICENSE, AUTHORS) is no language for the filters to judge
    return found if found not in ("unknown", "text") else by_path


# go-enry names whose canonical form differs from codemill's
_ENRY_NAMES = {"objective-c++": "objective-cpp", "c++": "cpp", "unix-assembly": "assembly", "perl-6": "raku"}


def _enry_name(base: str, data: bytes, *, heuristics_only: bool = False) -> str:
    """go-enry's answer in canonical form ("unknown" when it has none, or none it is sure of)."""
    import enry  # compiled Go library; loaded on first use (about 0.4 s) by the worker that identifies files

    if heuristics_only:
        guess = enry.get_language_by_content(base, data)
        name = guess.language if guess.safe else ""
    else:
        name = enry.get_language(base, data)
    found = canonical_lang(name or "") or "unknown"
    return _ENRY_NAMES.get(found, found)


def _fallback(ext: str, text: str) -> str:
    """Our own rules where enry does not decide between a shared extension's candidates (it knows MATLAB only by
    its classifier, which answers `M`/`Mercury` for short files, and has no Qt Linguist rule)."""
    if ext == "h":
        return "objective-c" if _OBJC.search(text) else ("cpp" if _CPP.search(text) else "c")
    if ext == "m":  # Objective-C is a superset of C: C code in a .m file is Objective-C
        return "objective-c" if _OBJC.search(text) or _C_LIKE.search(text) else "matlab"
    if ext == "pl":
        perl = re.search(r"^\s*(?:use\s+\w|my\s+[$@%]|sub\s+\w+|package\s+\w)", text, re.M)
        return "prolog" if not perl and _PROLOG.search(text) else "perl"
    if ext == "ts":
        head = text.lstrip()[:200]
        return "xml" if head.startswith("<?xml") or "<TS" in head or "<!DOCTYPE TS" in head else "typescript"
    return "unknown"
