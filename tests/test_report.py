"""The visual report: what each page shows, that it is self-contained, and that a real browser renders it."""

import base64
import html
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_leaderboard import OTHER_CARD, SPLIT, record
from typer.testing import CliRunner

from bench.harness.cli import app
from bench.harness.report import page_name, write_report
from bench.harness.store import ResultStore

PAGE = page_name(SPLIT, "quick")


def failed_record(method, reason):
    return {
        "schema": 1,
        "status": "failed",
        "key": {"method": method, "split_id": SPLIT, "profile": "quick", "seed": 0},
        "method": {"name": method, "is_reference": False},
        "failure": {"type": "TrainingDiverged", "reason": reason},
    }


def write_png(path: Path, shade: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), shade, dtype=np.uint8)
    pixels[:, : size[0] // 2, 0] = 255 - shade  # two halves: not a uniform image
    Image.fromarray(pixels).save(path)


@pytest.fixture
def results(tmp_path):
    """dcgan (1 seed, its coverage measured with another card), vae (2 seeds, with loss curves and a latent plot),
    a failed figr run, and the support-augment reference row (2 seeds); each grid a distinct PNG."""
    store = ResultStore(tmp_path / "results")
    records = [
        record("dcgan", {"fid": 80.0, "coverage": 0.2}, cards={"coverage": OTHER_CARD}),
        record("vae", {"fid": 90.0, "coverage": 0.3}, seed=0, loss_curves=True),
        record("vae", {"fid": 110.0, "coverage": 0.35}, seed=1, loss_curves=True),
        record("support-augment", {"fid": 200.0, "coverage": 0.25}, seed=0, is_reference=True),
        record("support-augment", {"fid": 220.0, "coverage": 0.27}, seed=1, is_reference=True),
        failed_record("figr", "non-finite loss at step 12"),
    ]
    records[1]["artifacts"]["latent_plot"] = f"plots/{SPLIT}/vae/quick/seed0.latent.png"
    for shade, rec in enumerate(records):
        store.write(rec)
        for artifact in rec.get("artifacts", {}).values():
            write_png(store.root / artifact, 20 * shade + 10)
    return store


class Page(HTMLParser):
    """The parts of a page the tests read: figures (class, data attributes, image sources, links, caption text)
    and the body's attributes."""

    def __init__(self, text):
        super().__init__()
        self.figures, self.body, self.external, self._figure = [], {}, [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[name])
        if tag in ("link", "script") and ("href" in attrs or "src" in attrs):
            self.external.append(attrs.get("href") or attrs.get("src"))
        if tag == "body":
            self.body = attrs
        elif tag == "figure":
            self._figure = {**attrs, "img": [], "href": [], "text": ""}
            self.figures.append(self._figure)
        elif self._figure is not None and tag == "img":
            self._figure["img"].append(attrs["src"])
        elif self._figure is not None and tag == "a":
            self._figure["href"].append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None

    def handle_data(self, data):
        if self._figure is not None:
            self._figure["text"] += data

    def of_class(self, name):
        return [f for f in self.figures if name in f["class"].split()]


def decoded(source: str) -> bytes:
    header, payload = source.split(",", 1)
    assert header.endswith(";base64")
    return base64.b64decode(payload)


def test_every_row_shows_its_lowest_seeds_grid_labelled_and_linked_to_its_record(results, tmp_path):
    out = tmp_path / "report"
    write_report(results, out)
    page = Page((out / PAGE).read_text())
    grids = {f["data-method"]: f for f in page.of_class("grid")}
    # The leaderboard's order: ranked by fid (dcgan 80 < vae's mean 100), the unranked failed run, the reference row.
    assert list(grids) == ["dcgan", "vae", "figr", "support-augment"]
    vae = grids["vae"]
    assert decoded(vae["img"][0]) == (results.root / f"grids/{SPLIT}/vae/quick/seed0.png").read_bytes()
    assert (out / vae["href"][0]).resolve() == (results.root / f"runs/{SPLIT}/vae/quick/seed0.json").resolve()
    assert "vae" in vae["text"] and "quick" in vae["text"] and "seed 0" in vae["text"]
    # Its two key scores are seed 0's, not the mean over seeds.
    assert "fid ↓ 90.0" in vae["text"] and "coverage ↑ 0.300" in vae["text"]
    assert "reference" in grids["support-augment"]["class"]
    assert "failed" in grids["figr"]["class"] and "non-finite loss at step 12" in grids["figr"]["text"]


def test_charts_show_each_key_metric_and_leave_out_values_measured_otherwise(results, tmp_path):
    out = tmp_path / "report"
    write_report(results, out)
    charts = {f["data-metric"]: decoded(f["img"][0]).decode() for f in Page((out / PAGE).read_text()).of_class("chart")}
    assert set(charts) == {"fid", "coverage"}
    assert all(name in charts["fid"] for name in ("dcgan", "vae", "support-augment"))
    # dcgan's coverage was measured with another evaluator: not drawn beside the others.
    assert "dcgan" not in charts["coverage"] and "vae" in charts["coverage"]


def test_the_training_section_embeds_loss_curves_and_latent_plots(results, tmp_path):
    out = tmp_path / "report"
    write_report(results, out)
    plots = Page((out / PAGE).read_text()).of_class("plot")
    assert sorted(decoded(f["img"][0]) for f in plots) == sorted(
        (results.root / f"plots/{SPLIT}/vae/quick/{name}").read_bytes() for name in ("seed0.png", "seed0.latent.png")
    )


def test_pages_load_nothing_from_elsewhere_and_are_reproduced_byte_for_byte(results, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_report(results, first)
    write_report(results, second)
    text = (first / PAGE).read_text()
    page = Page(text)
    assert page.external == []
    assert all(source.startswith("data:image/") for f in page.figures for source in f["img"])
    assert (second / PAGE).read_bytes() == (first / PAGE).read_bytes()


def test_the_index_links_every_page_and_names_unreadable_records(results, tmp_path):
    broken = results.root / "runs" / SPLIT / "vqvae" / "quick" / "seed0.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{ not json")
    errors = []
    pages = write_report(results, tmp_path / "report", errors)
    index = pages[0].read_text()
    assert [p.name for p in pages[1:]] == [PAGE] and f'href="{PAGE}"' in index
    assert len(errors) == 1 and "seed0.json" in errors[0] and html.escape(errors[0]) in index


def test_the_report_command_writes_into_the_results_dir_by_default(results):
    result = CliRunner().invoke(app, ["report", "--results-dir", str(results.root), "--json"])
    assert result.exit_code == 0, result.output
    written = json.loads(result.output)
    assert Path(written["index"]) == results.root / "report" / "index.html"
    assert [Path(p).name for p in written["pages"]] == [PAGE]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# Offline: without the background-networking flags Chromium keeps trying to reach Google's hosts.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(*arguments, profile: Path) -> subprocess.CompletedProcess:
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_chromium_renders_every_grid_and_chart(results, tmp_path):
    write_report(results, tmp_path / "report")
    url = (tmp_path / "report" / PAGE).as_uri()
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", url, profile=tmp_path / "profile").stdout
    body = Page(dom).body
    assert body.get("data-rendered") == "yes", dom[:2000]
    # 4 grids minus the failed run's, 2 charts, the loss curves and the latent plot: all decoded by the browser.
    assert body["data-images"] == body["data-images-rendered"] == "7"
    assert body["data-charts"] == body["data-charts-rendered"] == "2"
    shot = tmp_path / "page.png"
    chromium("--window-size=1200,1600", f"--screenshot={shot}", url, profile=tmp_path / "profile")
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not a blank page


COMMITTED_RESULTS = Path(__file__).resolve().parents[1] / "results"


def methods_with_a_grid(store: ResultStore) -> dict[str, int]:
    """{page name: methods with a successful run whose grid file exists}, counted from the records directly."""
    found: dict[str, set] = {}
    for rec in store.records():
        key, grid = rec["key"], rec.get("artifacts", {}).get("grid")
        if rec["status"] == "ok" and grid and (store.root / grid).is_file():
            found.setdefault(page_name(key["split_id"], key["profile"]), set()).add(key["method"])
    return {page: len(methods) for page, methods in found.items()}


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_chromium_renders_every_grid_and_chart_of_the_committed_results(tmp_path):
    store = ResultStore(COMMITTED_RESULTS)
    pages = write_report(store, tmp_path / "report")
    expected = methods_with_a_grid(store)
    assert sorted(p.name for p in pages[1:]) == sorted(expected)
    for path in pages[1:]:
        written = Page(path.read_text())
        assert len([f for f in written.of_class("grid") if f["img"]]) == expected[path.name], path.name
        dom = chromium("--virtual-time-budget=10000", "--dump-dom", path.as_uri(), profile=tmp_path / "profile")
        body = Page(dom.stdout).body
        assert body.get("data-rendered") == "yes", path.name
        assert body["data-images-rendered"] == body["data-images"], path.name
        assert body["data-charts-rendered"] == body["data-charts"] == str(len(written.of_class("chart"))), path.name
        assert int(body["data-images"]) >= expected[path.name] + int(body["data-charts"]) > 0
