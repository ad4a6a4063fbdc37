"""codemill/languages.py: content-based identification where the extension misleads (.h .m .pl .ts, no extension),
the extension elsewhere."""

from __future__ import annotations

import pytest

from codemill.languages import AMBIGUOUS, detect_language, lang_from_path, needs_detection
from tests.fixtures.languages import SAMPLES


@pytest.mark.parametrize("path,content,label", SAMPLES, ids=[f"{p}-{lab}" for p, _, lab in SAMPLES])
def test_ambiguous_files(path, content, label):
    assert detect_language(path, content) == label


def test_extension_alone_gets_these_wrong():
    # the cases above are the ones the extension map misjudges (C++/Objective-C headers, MATLAB, Prolog, Qt, scripts)
    wrong = [(p, lab) for p, _, lab in SAMPLES if lang_from_path(p) != lab]
    assert len(wrong) >= 14 and {lab for _, lab in wrong} >= {"cpp", "objective-c", "matlab", "prolog", "xml",
                                                               "python", "shell", "perl", "javascript"}


def test_only_shared_or_missing_extensions_are_identified():
    assert needs_detection("src/a.h") and needs_detection("bin/deploy") and needs_detection("x/y.TS")
    assert not needs_detection("a.py") and not needs_detection("Makefile") and not needs_detection("")
    # a .py file full of C stays python: its extension is not shared
    assert detect_language("a.py", "#include <stdio.h>\nint main(void) { return 0; }\n") == "python"
    # no extension, no shebang, prose: not a language (the filters drop unknown files)
    assert detect_language("LICENSE", "MIT License\n\nPermission is hereby granted, free of charge\n") == "unknown"
    assert detect_language("a.h", None) == "c" and set(AMBIGUOUS) == {"h", "m", "pl", "ts"}
