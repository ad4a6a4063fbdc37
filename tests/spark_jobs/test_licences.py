"""spark_jobs/licences.py and ingest's licence mapping: allow-list, files without licence information, opt-out
by repository and by owner, The Stack v1/v2 licence fields."""

from __future__ import annotations

import json

import pytest

from codemill import schemas
from spark_jobs import ingest, licences


def _file(doc_id, repo, license_):
    return (doc_id, f"s-{doc_id}", "src", repo, f"{doc_id}.py", "python", "x = 1\n", 6, None, license_, "t")


@pytest.fixture
def files(spark):
    rows = [_file("mit", "acme/tools", "MIT"), _file("two", "acme/tools", "mit,Apache-2.0"),
            _file("gpl", "acme/lib", "GPL-3.0"), _file("mixed", "acme/lib", "MIT,GPL-3.0"),
            _file("none", "acme/lib", None), _file("v2", "acme/lib", "permissive"),
            _file("out_repo", "Withdrawn/Project", "MIT"), _file("out_owner", "gone/anything", "MIT"),
            _file("out_owner2", "gone/other", None)]
    return spark.createDataFrame(rows, schemas.FILES)


def _verdicts(judged):
    return {r.doc_id: (r._outcome, r._reason) for r in judged.collect()}


def test_allow_list_and_opt_out(spark, files, tmp_path):
    opt = tmp_path / "opt_out.txt"
    opt.write_text("# repositories and owners that asked to be left out\nwithdrawn/project\ngone/  # whole owner\n\n")
    entries = licences.opt_out_entries(spark, licences.LicencesConfig(opt_out_file=str(opt)))
    judged = licences.judge(files, allow=licences.PERMISSIVE, no_licence="keep", opt_out=entries)
    v = _verdicts(judged)
    assert {k for k, (o, _) in v.items() if o is None} == {"mit", "two", "none", "v2"}
    assert v["gpl"] == ("licence_rejected", "licence_not_allowed: gpl-3.0")
    assert v["mixed"] == ("licence_rejected", "licence_not_allowed: gpl-3.0")  # every listed licence must be allowed
    assert v["out_repo"] == ("opted_out", "opt-out: repository withdrawn/project")
    assert v["out_owner"] == ("opted_out", "opt-out: owner gone") and v["out_owner2"][0] == "opted_out"
    assert licences.licensed_rows(judged).columns == schemas.FILES.fieldNames()
    rejected = licences.rejected_rows(judged)
    assert rejected.columns == schemas.LICENCE_REJECTED.fieldNames() and rejected.count() == 5


def test_no_licence_reject_and_custom_allow(files):
    v = _verdicts(licences.judge(files, allow=["GPL-3.0", "mit"], no_licence="reject"))
    assert v["none"] == ("licence_rejected", "no_licence: no licence information")
    assert v["gpl"][0] is None and v["mixed"][0] is None and v["two"] == ("licence_rejected",
                                                                          "licence_not_allowed: apache-2.0")


def test_config_and_opt_out_file_errors(tmp_path):
    assert "no_licence" in licences.LicencesConfig(no_licence="drop").validate()[0]
    assert "opt_out_file" in licences.LicencesConfig(opt_out_file=str(tmp_path / "missing.txt")).validate()[0]
    bad = tmp_path / "bad.txt"
    bad.write_text("ok/repo\na/b/c\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: 'a/b/c'"):
        licences.read_opt_out_file(str(bad))


def test_ingest_maps_the_stack_licence_fields(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    v1 = tmp_path / "v1"
    v1.mkdir()
    pq.write_table(pa.table({"content": ["a", "b"], "max_stars_repo_name": ["o/r", "o/s"],
                             "max_stars_repo_path": ["a.py", "b.py"],
                             "max_stars_repo_licenses": [["MIT", "Apache-2.0"], []]}), v1 / "part.parquet")
    v2 = tmp_path / "v2"
    v2.mkdir()
    pq.write_table(pa.table({"content": ["a", "b", "c"], "repo_name": ["o/r", "o/s", "o/t"],
                             "path": ["a.py", "b.py", "c.py"],
                             "detected_licenses": [["BSD-3-Clause"], [], []],
                             "license_type": ["permissive", "permissive", "no_license"]}), v2 / "part.parquet")
    got = {}
    for d in (v1, v2):
        spec = ingest.resolve_input(str(d))
        raw = ingest.read_raw(spark, spec, ingest.IngestConfig())
        got[d.name] = {r.path: r.license for r in raw.collect()}
    assert got["v1"] == {"a.py": "MIT,Apache-2.0", "b.py": None}
    assert got["v2"] == {"a.py": "BSD-3-Clause", "b.py": "permissive", "c.py": None}
    # the JSON Lines reader maps the same fields
    recs = [{"content": "a", "repo": "o/r", "path": "a.py", "detected_licenses": [], "license_type": "permissive"},
            {"content": "b", "repo": "o/s", "path": "b.py", "max_stars_repo_licenses": ["MIT"]},
            {"content": "c", "repo": "o/t", "path": "c.py", "detected_licenses": [], "license_type": "no_license"}]
    f = tmp_path / "recs.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    cols = {k: v for k, v in ingest.DEFAULT_COLUMNS.items()}
    rows = list(ingest._jsonl_rows(str(f), "recs.jsonl", columns=cols, id_columns=[], snippet=10))
    assert [r["license"] for r in rows] == ["permissive", "MIT", None]
