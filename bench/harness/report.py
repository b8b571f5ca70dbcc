"""`bench report`: the stored runs as pictures, one static HTML page per split and profile.

A page holds, in the leaderboard's order (`leaderboard.headline_order`): the headline table (the
leaderboard's own Markdown, rendered); every method's sample grid side by side with the reference
rows' (each grid's top row is the support set), labelled with method, profile, seed and two key
scores of that seed, and linked to its run record; bar charts of the headline metrics (mean over
seeds with the percentile-bootstrap 95% interval the leaderboard reports, reference rows hatched);
each method's loss curves and latent plot. Images are embedded as data URIs and the page carries
its own style and script, so it is one file that opens offline and loads nothing from elsewhere;
only the links to records and full-size files point outside it (relative to the page).

A page is a pure function of the records and the files they name: the same results give the same
bytes.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from markdown_it import MarkdownIt

from bench.harness.leaderboard import (
    AUGMENT_DIVERSITY,
    CardNotes,
    HeadlineOrder,
    bootstrap_interval,
    direction,
    format_headline_cell,
    header_for,
    headline_order,
    headline_section,
    scores_frame,
)
from bench.harness.store import ResultStore, RunKey
from bench.sdk.files import atomic_write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file backend

INDEX = "index.html"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1400px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; } th, td { border: 1px solid #ddd; padding: 0.2rem 0.45rem; }
th { background: #f4f4f4; } td { text-align: right; } td:nth-child(2) { text-align: left; }
.gallery, .charts, .training { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; } figcaption { font-size: 0.8rem; line-height: 1.35; max-width: 240px; }
figure.grid img { width: 240px; image-rendering: pixelated; border: 1px solid #ccc; }
figure.reference figcaption b { font-style: italic; }
figure.failed .missing { width: 240px; height: 120px; background: #fbeaea; display: flex; align-items: center;
  justify-content: center; font-size: 0.8rem; padding: 0.5rem; box-sizing: border-box; }
figure.chart img { width: 380px; } figure.plot img { height: 260px; }
.how { font-size: 0.85rem; color: #555; } nav { font-size: 0.85rem; }
"""

# Sets what a reader (or a headless browser in a test) can check once the page has loaded: how many images it
# has and how many of them decoded, in all and among the charts.
SCRIPT = """
window.addEventListener("load", () => {
  const drawn = (images) => Array.from(images).filter((image) => image.complete && image.naturalWidth > 0).length;
  const all = document.images, charts = document.querySelectorAll("figure.chart img");
  Object.assign(document.body.dataset, {
    images: all.length, imagesRendered: drawn(all), charts: charts.length, chartsRendered: drawn(charts),
    rendered: "yes",
  });
});
"""


def page_name(split_id: str, profile: str) -> str:
    """`fashion-mnist/novel9-4shot.v1` at `standard` -> `fashion-mnist--novel9-4shot.v1--standard.html`."""
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '--', split_id)}--{profile}.html"


def data_uri(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def svg_data_uri(figure) -> str:
    """The figure as an SVG data URI, with its text kept as text and without a date or random ids (same bytes for
    the same figure)."""
    buffer = io.BytesIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "bench-report"}):
        figure.tight_layout()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    return f"data:image/svg+xml;base64,{base64.b64encode(buffer.getvalue()).decode()}"


@dataclass
class Section:
    """One split and profile: its score rows, the headline's columns and order, and where its page goes."""

    split_id: str
    profile: str
    scores: pd.DataFrame
    metrics: list[str]
    order: HeadlineOrder
    notes: CardNotes

    @property
    def rows(self) -> list[str]:
        return self.order.methods + self.order.references

    def key_metrics(self) -> list[str]:
        """The two scores a grid is labelled with: the ranking metric and the diversity verdict's, else the first
        two headline metrics."""
        wanted = [self.order.primary, *AUGMENT_DIVERSITY.metrics]
        chosen = [m for m in dict.fromkeys(wanted) if m in self.metrics]
        return (chosen + [m for m in self.metrics if m not in chosen])[:2]

    def first_run(self, method: str) -> pd.Series | None:
        """The run whose grid represents the method: its lowest successful (seed, train seed), else its lowest run."""
        runs = self.scores[self.scores["method"] == method].drop_duplicates(["seed", "train_seed"])
        ok = runs[runs["status"] == "ok"]
        chosen = (ok if len(ok) else runs).sort_values(["seed", "train_seed"])
        return chosen.iloc[0] if len(chosen) else None

    def value(self, run: pd.Series, metric: str) -> float | None:
        rows = self.scores[
            (self.scores["method"] == run["method"])
            & (self.scores["seed"] == run["seed"])
            & (self.scores["train_seed"] == run["train_seed"])
            & (self.scores["metric"] == metric)
        ]
        return float(rows["value"].iloc[0]) if len(rows) else None


class ReportPage:
    """The HTML of one section; paths in it are relative to `path`."""

    def __init__(self, section: Section, store: ResultStore, records: dict[RunKey, dict], path: Path):
        self.section, self.store, self.records, self.path = section, store, records, path

    def link(self, target: Path) -> str:
        return html.escape(Path(os.path.relpath(target, self.path.parent)).as_posix(), quote=True)

    def key_of(self, run: pd.Series) -> RunKey:
        s = self.section
        return RunKey(run["method"], s.split_id, s.profile, int(run["seed"]), int(run["train_seed"]))

    def render(self, headline_markdown: str) -> str:
        s = self.section
        runs = s.scores.drop_duplicates(["method", "seed", "train_seed"])
        samples = sorted({int(n) for n in runs["n_samples"].dropna()})
        title = f"{s.split_id} · profile {s.profile}"
        how = (
            f"{runs['method'].nunique()} rows, {len(runs)} runs ({(runs['status'] == 'ok').sum()} succeeded); "
            f"samples per run: {', '.join(map(str, samples)) or 'n/a'}. Values are means over seeds (support draws); "
            "definitions in docs/metric-reference.md, protocol in docs/protocol.md."
        )
        body = [
            f'<nav><a href="{INDEX}">all pages</a></nav>',
            f"<h1>{html.escape(title)}</h1>",
            f'<p class="how">{html.escape(how)}</p>',
            '<section id="headline"><h2>Headline</h2>',
            MarkdownIt("commonmark").enable("table").render(headline_markdown),
            "</section>",
            '<section id="samples"><h2>Samples</h2>',
            '<p class="how">Each grid: the support set on its top row, then samples; the lowest seed of each row. '
            "Click a grid for its run record.</p>",
            f'<div class="gallery">{"".join(self.grid_figure(method) for method in s.rows)}</div>',
            "</section>",
            '<section id="charts"><h2>Key metrics</h2>',
            '<p class="how">Mean over seeds; whiskers: percentile-bootstrap 95% interval of the mean (none for one '
            "seed); hatched: reference rows. Values measured with another card than their column's majority are left "
            "out, as in the leaderboard.</p>",
            f'<div class="charts">{"".join(self.chart_figure(metric) for metric in s.metrics if direction(metric) is not None)}</div>',
            "</section>",
            '<section id="training"><h2>Training</h2>',
            f'<div class="training">{"".join(self.training_figures(method) for method in s.order.methods)}</div>',
            "</section>",
        ]
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body>\n{chr(10).join(body)}\n<script>{SCRIPT}</script>\n</body></html>\n"
        )

    def grid_figure(self, method: str) -> str:
        s = self.section
        run = s.first_run(method)
        if run is None:
            return ""
        key = self.key_of(run)
        record = self.records.get(key, {})
        classes = ["grid"] + (["reference"] if method in s.order.references else [])
        label = f"<b>{html.escape(method)}</b> · {html.escape(s.profile)} · seed {key.seed}"
        label += f" · train seed {key.train_seed}" if key.train_seed else ""
        grid = record.get("artifacts", {}).get("grid")
        if run["status"] != "ok" or not grid or not (self.store.root / grid).is_file():
            reason = record.get("failure", {}).get("reason") or ("no grid stored" if run["status"] == "ok" else "")
            picture = f'<div class="missing">{html.escape(str(run["status"]))}: {html.escape(reason[:200])}</div>'
            classes.append("failed")
        else:
            alt = f"samples of {method}, seed {key.seed}"
            picture = f'<img src="{data_uri(self.store.root / grid)}" alt="{html.escape(alt, quote=True)}">'
            scores = []
            for metric in s.key_metrics():
                value = s.value(run, metric)
                if value is not None:
                    scores.append(f"{html.escape(header_for(metric))} {format_headline_cell(np.array([value]))}")
            label += "<br>" + " · ".join(scores)
        record_link = self.link(self.store.record_path(key))
        return (
            f'<figure class="{" ".join(classes)}" data-method="{html.escape(method, quote=True)}">'
            f'<a href="{record_link}">{picture}</a><figcaption>{label}</figcaption></figure>'
        )

    def chart_figure(self, metric: str) -> str:
        s = self.section
        ok = s.scores[(s.scores["status"] == "ok") & (s.scores["metric"] == metric)]
        bars = []
        for method in s.rows:
            values = ok.loc[ok["method"] == method, "value"].to_numpy(dtype=float)
            if len(values) and s.notes.comparable(method, metric):
                interval = bootstrap_interval(values) if len(values) > 1 else None
                bars.append((method, float(values.mean()), interval, method in s.order.references))
        if not bars:
            return ""
        figure, axis = plt.subplots(figsize=(4.2, 0.3 * len(bars) + 0.9))
        positions = np.arange(len(bars))[::-1]
        for position, (_, mean, interval, is_reference) in zip(positions, bars, strict=True):
            axis.barh(
                position,
                mean,
                color="0.8" if is_reference else "C0",
                hatch="//" if is_reference else None,
                edgecolor="0.4",
                linewidth=0.5,
            )
            if interval is not None:
                axis.errorbar(
                    mean, position, xerr=[[mean - interval[0]], [interval[1] - mean]], color="k", capsize=2, lw=0.8
                )
        axis.set_yticks(positions, [b[0] for b in bars], fontsize=7)
        axis.tick_params(axis="x", labelsize=7)
        axis.set_title(header_for(metric), fontsize=9)
        axis.grid(axis="x", alpha=0.3)
        alt = f"bar chart of {metric} per method"
        return (
            f'<figure class="chart" data-metric="{html.escape(metric, quote=True)}">'
            f'<img src="{svg_data_uri(figure)}" alt="{html.escape(alt, quote=True)}"></figure>'
        )

    def training_figures(self, method: str) -> str:
        run = self.section.first_run(method)
        if run is None:
            return ""
        key = self.key_of(run)
        artifacts = self.records.get(key, {}).get("artifacts", {})
        figures = []
        for kind, caption in (("loss_curves", "loss curves"), ("latent_plot", "latent space (PCA)")):
            stored = artifacts.get(kind)
            if stored and (self.store.root / stored).is_file():
                alt = f"{caption} of {method}, seed {key.seed}"
                figures.append(
                    f'<figure class="plot"><a href="{self.link(self.store.record_path(key))}">'
                    f'<img src="{data_uri(self.store.root / stored)}" alt="{html.escape(alt, quote=True)}"></a>'
                    f"<figcaption><b>{html.escape(method)}</b> · {caption} · seed {key.seed}</figcaption></figure>"
                )
        return "".join(figures)


def sections(records: list[dict]) -> list[Section]:
    frame = scores_frame(records)
    if frame.empty:
        return []
    found = []
    for (split_id, profile), table in frame.groupby(["split_id", "profile"], sort=True):
        metrics, order, notes = headline_order(table)
        found.append(Section(split_id, profile, table, metrics, order, notes))
    return found


def write_report(store: ResultStore, out_dir: Path, errors: list[str] | None = None) -> list[Path]:
    """One page per (split, profile) of `store`'s records and an index linking them, written into `out_dir`;
    returns the pages' paths (the index first). Unreadable records are listed in `errors` and on the index."""
    errors = [] if errors is None else errors
    records = list(store.records(errors))
    by_key = {RunKey.from_dict(record["key"]): record for record in records}
    written = []
    entries = []
    for section in sections(records):
        path = out_dir / page_name(section.split_id, section.profile)
        headline = headline_section(records, section.split_id, section.profile, store.root, path)
        atomic_write_bytes(path, ReportPage(section, store, by_key, path).render(headline).encode())
        written.append(path)
        runs = section.scores.drop_duplicates(["method", "seed", "train_seed"])
        entries.append(
            f'<li><a href="{html.escape(path.name, quote=True)}">{html.escape(section.split_id)} · '
            f"{html.escape(section.profile)}</a> ({runs['method'].nunique()} rows, {len(runs)} runs)</li>"
        )
    problems = "".join(f"<li>{html.escape(error)}</li>" for error in errors)
    index = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Report</title>'
        f"<style>{STYLE}</style></head>\n<body>\n<h1>Report</h1>\n"
        f'<p class="how">Generated by <code>bench report</code> from the run records in '
        f"{html.escape(Path(os.path.relpath(store.root / 'runs', out_dir)).as_posix())}; one page per split and "
        "profile.</p>\n"
        f"<ul>{''.join(entries) or '<li>No runs are stored yet.</li>'}</ul>\n"
        + (f"<h2>Records that could not be read (skipped)</h2><ul>{problems}</ul>\n" if problems else "")
        + "</body></html>\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / INDEX, index.encode())
    return [out_dir / INDEX, *written]
