"""Language detection from file extension and file name.

`lang` values follow docs/CONTRACTS.md: lowercase canonical names. The first 18 are the languages of the
Arctic-SnowCoder paper (§2.1, The Stack v1 subset); the rest are common languages and data/markup formats that a
raw tree contains, so that filters and statistics can treat them by name instead of as "unknown".
"""

from __future__ import annotations

import os

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
