"""spark_jobs/ingest.py's language hook (`detect_languages`) and the filters' thresholds keyed on its result."""

from __future__ import annotations

from codemill import schemas
from spark_jobs import filter as filters
from spark_jobs import ingest
from tests.fixtures.languages import SAMPLES


def _row(i, path, content, lang):
    return (f"d{i}", f"s{i}", "src", "o/r", path, lang, content, len(content.encode()), None, None, "t")


def test_detect_languages_in_ingest(spark):
    rows = [_row(i, p, c, ingest.EXTENSIONS.get(p.rpartition(".")[2], "unknown") if "." in p else
                 ingest.FILENAMES.get(p.lower(), "unknown")) for i, (p, c, _) in enumerate(SAMPLES)]
    # a record that names its own language keeps it; a .py file is never re-identified
    rows.append(_row(100, "own.h", "#include <vector>\nnamespace a {}\n", "objective-cpp"))
    rows.append(_row(101, "plain.py", "namespace a {}\n", "python"))
    files = spark.createDataFrame(rows, schemas.FILES)
    out = {r.doc_id: r.lang for r in ingest.detect_languages(files).collect()}
    assert len(out) == len(rows)
    assert {f"d{i}": lab for i, (_, _, lab) in enumerate(SAMPLES)} == {k: v for k, v in out.items()
                                                                       if k not in ("d100", "d101")}
    assert out["d100"] == "objective-cpp" and out["d101"] == "python"


def test_filter_thresholds_key_on_the_detected_language(spark):
    header = "#pragma once\n#include <vector>\nnamespace n {\nclass A { public: std::vector<int> v; };\n}\n"
    files = spark.createDataFrame([_row(1, "a.h", header, "c")], schemas.FILES)
    detected = ingest.detect_languages(files)
    assert detected.first().lang == "cpp"
    cfg = filters.FilterConfig(languages={"cpp": {"min_chars": 10_000}})
    judged = {r.doc_id: r.first_reason for r in filters.rejected_rows(filters.judge(detected, cfg)).collect()}
    assert judged == {"d1": "min_chars"}  # the cpp threshold applied; as `c` (its extension) it would pass
    assert filters.rejected_rows(filters.judge(files, cfg)).count() == 0
