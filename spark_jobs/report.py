"""Funnel report: an HTML page with PNG plots of what every stage did.

    python -m spark_jobs.pipeline --stages report --lake lake --tokenize.shards_root shards --report.out report
    spark-submit spark_jobs/pipeline.py --stages report --lake s3a://bucket/lake --report.out s3a://bucket/report

Sections (each from the tables that stage wrote; a stage that has not run is listed as such):
per stage and language files and bytes in and out, outcomes of every input record, rejection reasons, files removed
for their licence or an opt-out, redacted spans per kind,
duplicate cluster sizes, contamination by benchmark, quality-score distributions with the selection cut-offs,
token mixes of the three phases, training loss and learning-rate curves read from MLflow, pass@1 per phase, and the
proxy-model ablations (`ablations`: bits per byte per variant, the Figure-2 scatter).
Aggregations run in Spark; only the small aggregates reach the driver. `report.out` and the shards may be object-store
URIs: the page is drawn in a local folder and uploaded (`index.html` last), the manifests are read through
`codemill.storage`.
"""

from __future__ import annotations

import dataclasses
import html
import json
import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on cluster drivers or CI

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from codemill import storage  # noqa: E402


@dataclasses.dataclass
class ReportConfig:
    """`report.*`: where the HTML report goes and which MLflow runs it plots (the lake and the shards are the
    pipeline's)."""

    out: str = "report"
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str | None = None

    def validate(self) -> list[str]:
        return [] if self.out else ["out: must name the report folder"]


class Report:
    """Collects sections (heading, HTML, plots) and writes `index.html` with the PNGs beside it; `out` may be an
    object-store URI (drawn in a local staging folder, uploaded by `write`)."""

    def __init__(self, out: Path | str):
        self.target = str(out)
        self.remote = not storage.is_local(self.target)
        self.out = Path(tempfile.mkdtemp(prefix="codemill-report-")) if self.remote else Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sections: list[str] = []
        self.plots: list[str] = []

    def section(self, title: str, body: str = "", figure: plt.Figure | None = None, slug: str | None = None) -> None:
        parts = [f"<h2>{html.escape(title)}</h2>"]
        if figure is not None:
            name = f"{slug or title.lower().replace(' ', '_')}.png"
            figure.tight_layout()
            figure.savefig(self.out / name, dpi=110)
            plt.close(figure)
            self.plots.append(name)
            parts.append(f'<img src="{name}" alt="{html.escape(title)}">')
        parts.append(body)
        self.sections.append("\n".join(parts))

    def missing(self, title: str, tables: str) -> None:
        self.sections.append(f"<h2>{html.escape(title)}</h2><p class='missing'>Not run yet: no {tables} "
                             f"table in this lake.</p>")

    def write(self, title: str) -> Path | str:
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
            "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;"
            "padding:2px 6px;text-align:right}th{background:#f3f3f3}img{max-width:100%}.missing{color:#a00}"
            f"</style></head><body><h1>{html.escape(title)}</h1>" + "\n".join(self.sections) + "</body></html>"
        )
        path = self.out / "index.html"
        path.write_text(page)
        if not self.remote:
            return path
        for name in [*self.plots, "index.html"]:  # the page last: it only links plots already there
            storage.write_bytes(storage.join(self.target, name), (self.out / name).read_bytes())
        shutil.rmtree(self.out, ignore_errors=True)
        return storage.join(storage.absolute(self.target), "index.html")


def _table_html(df: pd.DataFrame, max_rows: int = 60) -> str:
    return df.head(max_rows).to_html(index=False, float_format=lambda v: f"{v:,.3g}", border=0)


def _barh(series: pd.Series, title: str, xlabel: str, log: bool = False) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.3 * len(series) + 1)))
    series.sort_values().plot.barh(ax=ax, color="#4c72b0", logx=log)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return fig


# ---------------------------------------------------------------------------- sections
def funnel_section(report: Report, lake) -> None:
    from pyspark.sql import functions as F

    if not lake.exists("stage_stats"):
        return report.missing("Funnel per stage and language", "stage_stats")
    stats = lake.read("stage_stats")
    if "run_id" in stats.columns:  # the latest run of each stage
        latest = stats.groupBy("stage").agg(F.max("run_id").alias("run_id"))
        stats = stats.join(latest, ["stage", "run_id"])
    cols = [c for c in ("rows_in", "bytes_in", "rows_out", "bytes_out") if c in stats.columns]
    per_stage = stats.groupBy("stage").agg(*[F.sum(c).alias(c) for c in cols]).toPandas()
    order = [s for s in ("ingest", "licences", "filter", "exact_dedup", "near_dedup", "redact", "decontaminate",
                         "documents")
             if s in set(per_stage["stage"])]
    order += [s for s in per_stage["stage"] if s not in order]
    per_stage = per_stage.set_index("stage").loc[order].reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, unit in zip(axes, ("rows", "bytes")):
        if f"{unit}_in" not in per_stage:
            continue
        x = range(len(per_stage))
        ax.bar([i - 0.2 for i in x], per_stage[f"{unit}_in"], width=0.4, label="in", color="#9ecae1")
        ax.bar([i + 0.2 for i in x], per_stage[f"{unit}_out"], width=0.4, label="out", color="#3182bd")
        ax.set_xticks(list(x), per_stage["stage"], rotation=30, ha="right")
        ax.set_title(f"{'files' if unit == 'rows' else 'bytes'} in and out per stage")
        ax.legend()
    per_lang = (stats.groupBy("stage", "lang").agg(*[F.sum(c).alias(c) for c in cols]).toPandas()
                .sort_values(["stage", "rows_in"], ascending=[True, False]))
    report.section("Funnel per stage and language", _table_html(per_lang, 200), fig, "funnel")


def outcomes_section(report: Report, lake) -> None:
    if not lake.exists("outcomes"):
        return report.missing("Outcome of every input record", "outcomes")
    counts = lake.read("outcomes").groupBy("outcome").count().toPandas().set_index("outcome")["count"]
    report.section("Outcome of every input record",
                   f"<p>{int(counts.sum()):,} input records, each in exactly one outcome.</p>"
                   + _table_html(counts.reset_index()),
                   _barh(counts, "input records by outcome", "records"), "outcomes")


def rejections_section(report: Report, lake) -> None:
    if not lake.exists("rejected"):
        return report.missing("Rejection reasons", "rejected")
    df = lake.read("rejected")
    reason_col = "first_reason" if "first_reason" in df.columns else "reason"
    agg = df.groupBy("lang", reason_col).count().toPandas()
    if agg.empty:
        return report.section("Rejection reasons", "<p>No file was rejected by the filters.</p>")
    pivot = agg.pivot_table(index=reason_col, columns="lang", values="count", fill_value=0)
    fig, ax = plt.subplots(figsize=(9, max(3, 0.35 * len(pivot) + 1)))
    pivot.plot.barh(stacked=True, ax=ax, colormap="tab20")
    ax.set_title("rejected files by first failing rule and language")
    ax.set_xlabel("files")
    report.section("Rejection reasons", _table_html(agg.sort_values("count", ascending=False)), fig, "rejections")


def duplicates_section(report: Report, lake) -> None:
    from pyspark.sql import functions as F

    if not lake.exists("near_dup_clusters") and not lake.exists("exact_duplicates"):
        return report.missing("Duplicate cluster sizes", "exact_duplicates or near_dup_clusters")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    rows = []
    if lake.exists("exact_duplicates"):
        sizes = (lake.read("exact_duplicates").groupBy("representative").count()
                 .select((F.col("count") + 1).alias("size")).groupBy("size").count().toPandas())
        if not sizes.empty:
            sizes = sizes.sort_values("size")
            ax.plot(sizes["size"], sizes["count"], "o-", label="exact")
            rows.append(("exact", int((sizes["size"] * sizes["count"]).sum()), int(sizes["count"].sum())))
    if lake.exists("near_dup_clusters"):
        sizes = (lake.read("near_dup_clusters").groupBy("cluster_id").count()
                 .withColumnRenamed("count", "size").groupBy("size").count().toPandas())
        if not sizes.empty:
            sizes = sizes.sort_values("size")
            ax.plot(sizes["size"], sizes["count"], "s-", label="near (MinHash)")
            rows.append(("near", int((sizes["size"] * sizes["count"]).sum()), int(sizes["count"].sum())))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cluster size (files)")
    ax.set_ylabel("clusters")
    ax.set_title("duplicate cluster sizes")
    ax.legend()
    body = _table_html(pd.DataFrame(rows, columns=["kind", "files in clusters", "clusters"]))
    report.section("Duplicate cluster sizes", body, fig, "duplicates")


def contamination_section(report: Report, lake) -> None:
    from pyspark.sql import functions as F

    if not lake.exists("contamination"):
        return report.missing("Contamination by benchmark", "contamination")
    agg = (lake.read("contamination").groupBy("benchmark")
           .agg(F.countDistinct("doc_id").alias("files"), F.countDistinct("task_id").alias("tasks")).toPandas())
    if agg.empty:
        return report.section("Contamination by benchmark", "<p>No file matched a benchmark.</p>")
    report.section("Contamination by benchmark", _table_html(agg.sort_values("files", ascending=False)),
                   _barh(agg.set_index("benchmark")["files"], "contaminated files per benchmark", "files"),
                   "contamination")


def licences_section(report: Report, lake) -> None:
    if not lake.exists("licence_rejected"):
        return report.missing("Licences and opt-out", "licence_rejected")
    agg = lake.read("licence_rejected").groupBy("outcome", "reason").count().toPandas()
    if agg.empty:
        return report.section("Licences and opt-out", "<p>No file was removed for its licence or an opt-out.</p>")
    agg = agg.sort_values("count", ascending=False)
    report.section("Licences and opt-out", _table_html(agg),
                   _barh(agg.groupby("outcome")["count"].sum(), "files removed by licence / opt-out", "files"),
                   "licences")


def redaction_section(report: Report, lake) -> None:
    from pyspark.sql import functions as F

    if not lake.exists("redactions"):
        return report.missing("Redacted secrets and personal data", "redactions")
    agg = (lake.read("redactions").groupBy("kind").agg(F.count("*").alias("spans"),
                                                        F.countDistinct("doc_id").alias("files")).toPandas())
    body = "<p>Spans replaced by placeholders, per kind (the secrets themselves are never stored).</p>"
    if lake.exists("redaction_rejected"):
        n = lake.read("redaction_rejected").count()
        body += f"<p>{n:,} files had more findings than redact.max_findings and were dropped.</p>"
    if agg.empty:
        return report.section("Redacted secrets and personal data", body + "<p>Nothing was redacted.</p>")
    agg = agg.sort_values("spans", ascending=False)
    report.section("Redacted secrets and personal data", body + _table_html(agg),
                   _barh(agg.set_index("kind")["spans"], "redacted spans per kind", "spans"), "redaction")


def scores_section(report: Report, lake) -> None:
    from pyspark.sql import functions as F

    if not lake.exists("scores"):
        return report.missing("Quality scores and selection cut-offs", "scores")
    scores = lake.read("scores").select("lang", "score")
    langs = [r["lang"] for r in scores.groupBy("lang").count().orderBy(F.desc("count")).limit(8).collect()]
    hist = score_histograms(scores, langs)
    cut = {}
    if lake.exists("selected_hq"):
        cut = {r["lang"]: r["cut"] for r in lake.read("selected_hq").groupBy("lang")
               .agg(F.min("score").alias("cut")).collect()}
    n = len(langs)
    cols = min(4, max(1, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, lang in zip(axes.flat, langs):
        h = hist[hist["lang"] == lang]
        ax.bar(h["lo"], h["count"], width=(h["hi"] - h["lo"]).clip(lower=1e-3), align="edge", color="#6baed6")
        if lang in cut:
            ax.axvline(cut[lang], color="#d62728", lw=2, label=f"cut-off {cut[lang]:.2f}")
            ax.legend(fontsize=7)
        ax.set_title(f"{lang} (n={int(h['count'].sum())})", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("annotator scores per language; red: lowest score kept in selected_hq")
    summary = (scores.groupBy("lang").agg(F.count("*").alias("files"), F.avg("score").alias("mean score"))
               .toPandas().sort_values("files", ascending=False))
    summary["cut-off"] = summary["lang"].map(cut)
    report.section("Quality scores and selection cut-offs", _table_html(summary), fig, "scores")


def score_histograms(scores, langs: list[str], *, bins: int = 30) -> pd.DataFrame:
    """(lang, bin, lo, hi, count): a `bins`-bin histogram of `score` per language of `langs`, each over that
    language's [min, max], counted in Spark: the driver gets langs x bins rows, never the score table (hundreds of
    millions of rows at scale). The last bin holds its upper edge, as numpy.histogram's does."""
    from pyspark.sql import functions as F

    rows = scores.where(F.col("lang").isin(langs))
    ranges = rows.groupBy("lang").agg(F.min("score").alias("lo"), F.max("score").alias("hi"))
    width = (F.col("hi") - F.col("lo")) / F.lit(bins)
    at = F.when(width > 0, F.floor((F.col("score") - F.col("lo")) / width)).otherwise(F.lit(0))
    counted = (rows.join(F.broadcast(ranges), on="lang")
               .select("lang", F.least(at, F.lit(bins - 1)).cast("int").alias("bin"))
               .groupBy("lang", "bin").count())
    out = counted.join(F.broadcast(ranges), on="lang").toPandas()
    if out.empty:
        return pd.DataFrame(columns=["lang", "bin", "lo", "hi", "count"])
    step = (out["hi"] - out["lo"]) / bins
    out["lo"], out["hi"] = out["lo"] + out["bin"] * step, out["lo"] + (out["bin"] + 1) * step
    return out.sort_values(["lang", "bin"]).reset_index(drop=True)[["lang", "bin", "lo", "hi", "count"]]


def phases_section(report: Report, shards: str | None) -> None:
    manifests = {}
    if shards:
        for phase in ("phase1", "phase2", "phase3"):
            path = storage.join(shards, phase, "manifest.json")
            if storage.isfile(path):
                manifests[phase] = json.loads(storage.read_text(path))
    if not manifests:
        return report.missing("Token mix of the three phases", "shard manifest")
    mix = pd.DataFrame({p: m.get("tokens_per_language", {}) for p, m in manifests.items()}).fillna(0).T
    share = mix.div(mix.sum(axis=1), axis=0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    mix.plot.bar(stacked=True, ax=axes[0], colormap="tab20", legend=False)
    axes[0].set_title("tokens per phase and language")
    share.plot.bar(stacked=True, ax=axes[1], colormap="tab20")
    axes[1].set_title("share of tokens (phase 3: Python raised)")
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    rows = [{"phase": p, "tokens": sum(m.get("tokens_per_language", {}).values()), "repeat": m.get("repeat", 1),
             "seq_len": m.get("seq_len")} for p, m in manifests.items()]
    report.section("Token mix of the three phases", _table_html(pd.DataFrame(rows)) + _table_html(
        share.reset_index().rename(columns={"index": "phase"})), fig, "phases")


def training_section(report: Report, tracking_uri: str | None, experiment: str | None) -> None:
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        return report.missing("Training curves", "MLflow")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    exps = [e for e in exps if e is not None]
    runs = client.search_runs([e.experiment_id for e in exps], order_by=["attributes.start_time ASC"]) if exps else []
    # The LM trainer tags its runs with their phase; other runs in the store (the annotator's) are left out.
    runs = [r for r in runs if r.data.tags.get("phase") and not r.data.tags.get("ablate.stage") and any(
        k in r.data.metrics for k in ("train/loss", "train_loss", "loss"))]  # ablation runs: their own section
    if not runs:
        return report.missing("Training curves", "MLflow training run in this tracking store")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    offset = 0
    rows = []
    for run in runs:
        phase = run.data.tags.get("phase", run.info.run_name)
        loss_key = next(k for k in ("train/loss", "train_loss", "loss") if k in run.data.metrics)
        lr_key = next((k for k in ("train/lr", "lr", "lr-AdamW", "learning_rate") if k in run.data.metrics), None)
        loss = client.get_metric_history(run.info.run_id, loss_key)
        steps = [m.step + offset for m in loss]
        axes[0].plot(steps, [m.value for m in loss], label=phase)
        if lr_key:
            lr = client.get_metric_history(run.info.run_id, lr_key)
            axes[1].plot([m.step + offset for m in lr], [m.value for m in lr], label=phase)
        offset = (max(steps) + 1) if steps else offset
        row = {"phase": phase, "run_id": run.info.run_id[:8], "steps": len(loss),
               "final loss": loss[-1].value if loss else None}
        row.update({k: v for k, v in run.data.metrics.items() if k.startswith("eval/") or "pass@1" in k})
        rows.append(row)
    axes[0].set_title("training loss")
    axes[0].set_xlabel("optimizer step (phases concatenated)")
    axes[1].set_title("learning rate")
    axes[1].set_xlabel("optimizer step (phases concatenated)")
    for ax in axes:
        ax.legend()
    report.section("Training curves (MLflow)", _table_html(pd.DataFrame(rows)), fig, "training")


def figure2_points(df: pd.DataFrame) -> pd.DataFrame:
    """ablation, annotator, benchmark, align_auc, bpb_gain (the control's mean bpb minus the selection's): one
    point per annotator and benchmark of the rows that name an annotator and their random-control baseline."""
    means = df.groupby(["ablation", "variant", "benchmark"])["bpb"].mean()
    points = []
    for (ablation, variant, annotator, baseline, bench), g in df.dropna(subset=["annotator", "align_auc"]).groupby(
            ["ablation", "variant", "annotator", "baseline", "benchmark"]):
        if (ablation, baseline, bench) in means.index:
            points.append({"ablation": ablation, "annotator": annotator, "benchmark": bench,
                           "align_auc": float(g["align_auc"].iloc[0]),
                           "bpb_gain": float(means[(ablation, baseline, bench)] - means[(ablation, variant, bench)])})
    return pd.DataFrame(points, columns=["ablation", "annotator", "benchmark", "align_auc", "bpb_gain"])


def ablations_section(report: Report, lake) -> None:
    """Per ablation: bits per byte per benchmark and variant (mean, error bars one standard deviation over seeds),
    and the Figure-2 analogue: each annotator's alignment ROC-AUC against its selection's bpb gain over the control
    (paper Fig. 2), with Spearman's rank correlation."""
    if not lake.exists("ablations"):
        return report.missing("Proxy-model ablations", "ablations (python -m trainer.ablate)")
    from scipy import stats

    df = lake.read("ablations").select("ablation", "variant", "seed", "benchmark", "bpb", "annotator", "baseline",
                                       "align_auc", "budget_tokens").toPandas()
    for ablation, part in df.groupby("ablation"):
        part = part[~part["benchmark"].str.contains("/")]  # HumanEval-X languages: in the table below
        agg = part.groupby(["benchmark", "variant"])["bpb"].agg(["mean", "std", "count"]).reset_index()
        means = agg.pivot(index="benchmark", columns="variant", values="mean")
        stds = agg.pivot(index="benchmark", columns="variant", values="std").fillna(0)
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
        means.plot.bar(yerr=stds, ax=axes[0], capsize=2, colormap="tab10", width=0.8)
        axes[0].set_ylim(means.min().min() * 0.97, means.max().max() * 1.02)
        axes[0].set_ylabel("bits per byte (lower is better)")
        axes[0].set_title(f"{ablation}: {int(part['budget_tokens'].iloc[0]):,} tokens per variant, "
                          f"{part['seed'].nunique()} seeds")
        axes[0].legend(fontsize=7)
        points = figure2_points(df[df["ablation"] == ablation])
        text = ""
        if len(points):
            for annotator, g in points.groupby("annotator"):
                axes[1].scatter(g["align_auc"], g["bpb_gain"], label=annotator)
                for _, r in g.iterrows():
                    axes[1].annotate(r["benchmark"], (r["align_auc"], r["bpb_gain"]), fontsize=6)
            axes[1].axhline(0, color="grey", lw=0.5)
            axes[1].legend(fontsize=7)
            if len(points) > 2:
                rho = stats.spearmanr(points["align_auc"], points["bpb_gain"]).statistic
                text = f"<p>Figure 2: Spearman rank correlation {rho:.3f} over {len(points)} points.</p>"
        axes[1].set_xlabel("annotator alignment ROC-AUC")
        axes[1].set_ylabel("bpb gain over the random control")
        axes[1].set_title("Figure 2 analogue")
        table = agg.assign(cell=lambda a: a["mean"].map("{:.4f}".format) + " ± " + a["std"].fillna(0).map(
            "{:.4f}".format)).pivot(index="variant", columns="benchmark", values="cell").reset_index()
        report.section(f"Proxy-model ablation: {ablation}", text + _table_html(table) + _table_html(points), fig,
                       f"ablation-{ablation}")


def build_report(lake, cfg: ReportConfig, *, shards: str | None = None) -> Path | str:
    report = Report(cfg.out)
    tables = lake.tables()
    report.section("Tables", _table_html(pd.DataFrame(
        [{"table": t.name, "version": t.version, "rows": t.rows, "files": t.files, "MB": t.bytes / 1e6}
         for t in tables])) if tables else "<p>The lake is empty.</p>")
    funnel_section(report, lake)
    outcomes_section(report, lake)
    rejections_section(report, lake)
    licences_section(report, lake)
    redaction_section(report, lake)
    duplicates_section(report, lake)
    contamination_section(report, lake)
    scores_section(report, lake)
    phases_section(report, shards)
    training_section(report, cfg.mlflow_tracking_uri, cfg.mlflow_experiment)
    ablations_section(report, lake)
    return report.write(f"codemill report — {lake.root}")
