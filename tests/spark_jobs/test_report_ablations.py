"""The report's proxy-model ablation section (spark_jobs/report.py): bars per benchmark and variant, and the
Figure-2 points (an annotator's alignment ROC-AUC against its selection's bits-per-byte gain over the control)."""

from __future__ import annotations

import pandas as pd
import pytest

from spark_jobs.report import Report, ablations_section, figure2_points


def rows() -> pd.DataFrame:
    out = []
    for seed in (1, 2):
        for bench, auc in (("humaneval", 0.9), ("mbpp", 0.8), ("bigcodebench", 0.7), ("humaneval_x/go", None)):
            base = {"humaneval": 2.0, "mbpp": 2.2, "bigcodebench": 2.5, "humaneval_x/go": 2.9}[bench]
            out.append(("demo", "p1_random", seed, bench, base + 0.01 * seed, None, None, None, 245760))
            # the selection gains more where the annotator aligns better: 0.09, 0.08, 0.07
            gain = 0.0 if auc is None else auc / 10
            out.append(("demo", "p1_p2", seed, bench, base - gain + 0.01 * seed, "instruct", "p1_random", auc,
                        245760))
    return pd.DataFrame(out, columns=["ablation", "variant", "seed", "benchmark", "bpb", "annotator", "baseline",
                                      "align_auc", "budget_tokens"])


def test_figure2_points_are_gains_over_the_control_per_benchmark():
    points = figure2_points(rows()).sort_values("benchmark")
    assert list(points["benchmark"]) == ["bigcodebench", "humaneval", "mbpp"]
    assert list(points["bpb_gain"]) == pytest.approx([0.07, 0.09, 0.08])
    assert list(points["align_auc"]) == pytest.approx([0.7, 0.9, 0.8])


class _Frame:
    def __init__(self, df):
        self.df = df

    def select(self, *cols):
        return _Frame(self.df[list(cols)])

    def toPandas(self):
        return self.df


class _Lake:
    def exists(self, name):
        return name == "ablations"

    def read(self, name):
        return _Frame(rows())


def test_the_ablation_section_draws_bars_and_the_scatter(tmp_path):
    report = Report(tmp_path / "report")
    ablations_section(report, _Lake())
    report.write("r")
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Proxy-model ablation: demo" in page and "Spearman rank correlation 1.000 over 3 points" in page
    assert (tmp_path / "report" / "ablation-demo.png").stat().st_size > 10_000
