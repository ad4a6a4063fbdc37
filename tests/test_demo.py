"""End to end: `scripts/demo.py` on a tiny real-code corpus runs every phase; the report and the quality-scores
notebook (executed headlessly with nbclient) show plots of the demo's own output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "scripts.demo", "--out", str(out), "--corpus_mb", "2", "--synth_seeds", "1"],
                   cwd=REPO, env=env, check=True, timeout=3000)
    return out


@pytest.mark.slow
def test_demo_writes_every_phase(demo_out, spark):
    from codemill.lake import Lake

    lake = Lake(spark, str(demo_out / "lake"))
    names = {t.name: t for t in lake.tables()}
    for table in ("files", "licensed", "redacted", "redactions", "outcomes", "clean", "documents", "annotator_train",
                  "alignment_set", "scores", "selected_hq", "synthetic", "shards", "eval_results"):
        assert table in names, f"demo did not write table {table}"
    for table in ("files", "clean", "documents", "scores", "selected_hq", "shards"):
        assert names[table].rows > 0, f"table {table} is empty"
    # Every input record has exactly one outcome.
    outcomes = lake.read("outcomes")
    assert outcomes.count() == outcomes.select("source_id").distinct().count()
    for phase in ("phase1", "phase2", "phase3"):
        manifest = json.loads((demo_out / "shards" / phase / "manifest.json").read_text())
        assert manifest["splits"]["train"]["tokens"] > 0
        assert (demo_out / "runs" / phase / "hf" / "config.json").exists()
    timings = json.loads((demo_out / "timings.json").read_text())
    assert timings["total"] > 0 and len(timings) >= 15


@pytest.mark.slow
def test_report_has_plots_of_the_demo(demo_out):
    page = (demo_out / "report" / "index.html").read_text()
    for plot in ("funnel.png", "outcomes.png", "scores.png", "phases.png", "training.png"):
        assert plot in page, f"report lacks {plot}"
        assert (demo_out / "report" / plot).stat().st_size > 5_000
    assert "Not run yet" not in page.split("Duplicate cluster sizes")[0]


@pytest.mark.slow
def test_quality_scores_notebook_executes_on_the_demo(demo_out, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "quality_scores.ipynb", as_version=4)
    env = {"CODEMILL_LAKE": str(demo_out / "lake"), "CODEMILL_ANNOTATOR": str(demo_out / "annotator"),
           "CODEMILL_REPO": str(REPO)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        resources = {"metadata": {"path": str(tmp_path)}}
        client = NotebookClient(nb, timeout=900, kernel_name="python3", resources=resources)
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "the notebook should draw the score distribution, cut-offs and ROC curves"
    nbformat.write(nb, tmp_path / "quality_scores.executed.ipynb")
