"""Degenerate sample sets (`bench degenerate`): the sets are what their names say, the stored table is what the docs
and the leaderboard show, and no verdict reads a metric for a case the table shows fooling it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.harness.degenerate import CASES, Material
from bench.harness.degenerate_tables import (
    CASE_NAMES,
    DOCS_BEGIN,
    DOCS_END,
    docs_section,
    fooled_by,
    read_tables,
    verdicts,
)
from bench.harness.leaderboard import VERDICT_RULES, render
from metrics import metrics_with_role

ROOT = Path(__file__).resolve().parent.parent
TABLES = read_tables(ROOT / "results")


def _material(n=50, seed=0):
    rng = np.random.default_rng(seed)
    real = np.zeros((n, 1, 28, 28), np.float32)
    real[:, :, 6:22, 4:24] = rng.uniform(0.3, 1.0, (n, 1, 1, 1))  # boxes of varied brightness on black
    other = np.zeros_like(real)
    other[:, :, 2:26, 10:18] = 0.8
    return Material(real, other, "bars", np.random.default_rng(seed))


def test_every_case_has_a_builder_in_table_order():
    assert tuple(case.name for case in CASES) == CASE_NAMES


def test_each_case_is_the_set_its_name_says():
    material = _material()
    sets = {case.name: case.build(material) for case in CASES}
    for name, images in sets.items():
        assert images.shape == material.real.shape and images.min() >= 0 and images.max() <= 1, name
    distance_to_mean = np.square(material.real - material.real.mean(0)).mean((1, 2, 3))
    repeated = sets["one image repeated"]
    assert (repeated == repeated[0]).all()
    np.testing.assert_array_equal(repeated[0], material.real[distance_to_mean.argmin()])
    np.testing.assert_allclose(sets["class mean"][7], material.real.mean(0), atol=1e-6)
    blanks = sets["blanks plus one"]
    assert (blanks[:-1] == 0).all()  # the border of every real image is black
    np.testing.assert_array_equal(blanks[-1], material.real[distance_to_mean.argmax()])
    np.testing.assert_array_equal(sets["another class"], material.other)
    blurred = sets["blurred"]
    # Blur spreads each box edge over pixels: the total variation stays, the squared gradient (edge sharpness) falls.
    sharpness = lambda x: np.square(np.diff(x, axis=-1)).sum()  # noqa: E731
    assert sharpness(blurred) < 0.5 * sharpness(material.real)
    np.testing.assert_allclose(blurred.mean(), material.real.mean(), rtol=0.02)  # and keeps their mass
    noise = sets["noise"]
    assert (
        abs(noise.mean() - material.real.mean()) < 0.05 and np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1] < 0.2
    )


def test_a_case_is_fooled_exactly_when_it_scores_as_well_as_real_images_in_the_metrics_direction():
    values = {"real": 0.5, "one image repeated": 0.5, "class mean": 0.2, "noise": 0.9}
    assert verdicts("coverage", values) == {"one image repeated": "fooled", "class mean": "ordered", "noise": "fooled"}
    assert verdicts("fid", values) == {"one image repeated": "fooled", "class mean": "fooled", "noise": "ordered"}
    assert set(verdicts("support_nn_mse", values).values()) == {"no direction"}


@pytest.mark.skipif(not TABLES, reason="no degenerate-set table is stored under results/degenerate")
def test_no_verdict_reads_a_metric_for_a_case_the_stored_table_shows_fooling_it():
    fooled = fooled_by(TABLES)
    for rule in VERDICT_RULES:
        for metric in rule.metrics:
            assert not set(rule.must_order) & set(fooled.get(metric, [])), (rule.short, metric, fooled.get(metric))
    for metric in metrics_with_role("ranking"):  # the leaderboard's order
        assert metric not in fooled, (metric, fooled[metric])


@pytest.mark.skipif(not TABLES, reason="no degenerate-set table is stored under results/degenerate")
def test_the_docs_show_the_stored_tables_and_the_leaderboard_marks_what_they_fool(tmp_path):
    text = (ROOT / "docs" / "metrics.md").read_text()
    shown = text.split(DOCS_BEGIN, 1)[1].split(DOCS_END, 1)[0]
    assert shown == "\n" + docs_section(TABLES), (
        "docs/metrics.md is stale: run `bench degenerate --docs docs/metrics.md`"
    )
    (tmp_path / "degenerate").mkdir()
    for path in (ROOT / "results" / "degenerate").glob("*.json"):
        (tmp_path / "degenerate" / path.name).write_text(path.read_text())
    legend = render([], tmp_path, tmp_path / "leaderboard.md")
    for metric, cases in fooled_by(TABLES).items():
        assert f"`{metric}` by {', '.join(cases)}" in legend
    for metric in metrics_with_role("report"):
        assert f"`{metric}`" in legend.split("the FIGR/GAN report's metrics")[0].rsplit("\n", 2)[-1]


def test_a_malformed_table_is_named_and_the_leaderboard_still_renders(tmp_path):
    (tmp_path / "degenerate").mkdir()
    (tmp_path / "degenerate" / "bad.json").write_text('{"scores": ')
    with pytest.raises(ValueError, match="bad.json: not a degenerate-set table"):
        read_tables(tmp_path)
    assert "bad.json" in render([], tmp_path, tmp_path / "leaderboard.md")
