"""The rules the harness applies to a metric are declared on the metric: display order, settings per
profile, regression tolerance and leaderboard roles. A metric registered here, and nowhere else, reaches
the runner's settings, the leaderboard, `bench check` and the generated reference."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bench.harness.check import OK, REGRESSION, check, write_baseline
from bench.harness.cli import app
from bench.harness.evaluation import evaluate
from bench.harness.leaderboard import AUGMENT_DIVERSITY, bootstrap_interval, write_leaderboard
from bench.harness.markdown import markdown_table
from bench.harness.metric_docs import REGENERATE, metric_reference
from bench.harness.store import ResultStore
from bench.sdk.method import PROFILES
from metrics import (
    METRICS,
    Metric,
    MetricResult,
    MetricSettings,
    Tolerance,
    fixed_setting,
    in_display_order,
    profile_setting,
    profile_settings,
)

ROOT = Path(__file__).resolve().parents[1]
SPLIT = "fashion-mnist/novel9-4shot.v1"

# What the runner recorded in `evaluation.settings` before the metrics declared their settings (its
# `EVAL_SETTINGS`, copied), plus `nll_ais`'s (added later): `is_current` compares a stored run's settings
# with the profile's, so any other dict would make every stored run stale.
RECORDED_SETTINGS = {
    "smoke": {
        "ais_steps": 5,
        "ais_chains": 2,
        "ais_leapfrog": 2,
        "ais_max_images": 8,
        "nll_importance_samples": 8,
        "nll_max_images": 64,
        "backtrack_images": 16,
        "backtrack_steps": 30,
        "backtrack_restarts": 1,
        "backtrack_lr": 0.05,
    },
    "quick": {
        "ais_steps": 100,
        "ais_chains": 4,
        "ais_leapfrog": 5,
        "ais_max_images": 20,
        "nll_importance_samples": 30,
        "nll_max_images": None,
        "backtrack_images": 50,
        "backtrack_steps": 400,
        "backtrack_restarts": 2,
        "backtrack_lr": 0.2,
    },
    "standard": {
        "ais_steps": 100,
        "ais_chains": 4,
        "ais_leapfrog": 5,
        "ais_max_images": 20,
        "nll_importance_samples": 30,
        "nll_max_images": None,
        "backtrack_images": 100,
        "backtrack_steps": 400,
        "backtrack_restarts": 2,
        "backtrack_lr": 0.2,
    },
    "paper": {
        "ais_steps": 1000,
        "ais_chains": 8,
        "ais_leapfrog": 10,
        "ais_max_images": 50,
        "nll_importance_samples": 5000,
        "nll_max_images": None,
        "backtrack_images": 100,
        "backtrack_steps": 1000,
        "backtrack_restarts": 5,
        "backtrack_lr": 0.2,
    },
}


def test_each_profile_records_the_settings_it_recorded_before():
    assert set(RECORDED_SETTINGS) == set(PROFILES)
    for profile in PROFILES:
        assert profile_settings(profile) == RECORDED_SETTINGS[profile], profile


def test_no_committed_run_is_made_stale_by_its_settings():
    records = list(ResultStore(ROOT / "results").records())
    assert records
    for record in records:
        stored, current = record["evaluation"]["settings"], profile_settings(record["key"]["profile"])
        # A record made before a metric existed lacks that metric's settings (and the metric: it is stale by the
        # metric's version, and rescoring or rerunning adds both); every setting it has is the profile's.
        assert stored == {key: current[key] for key in stored}, record["key"]
        declared_by_absent_metrics = {
            key
            for name in METRICS.names()
            if name not in record.get("metrics", {}) and METRICS.get(name).settings  # a failed run has none
            for key in METRICS.get(name).settings.for_profile(record["key"]["profile"])
        }
        assert set(current) - set(stored) <= declared_by_absent_metrics, record["key"]


# -- a throw-away metric, declared in one place --------------------------------------------------
@dataclass(frozen=True)
class SpreadSettings(MetricSettings):
    spread_blur: int = profile_setting(3, "box blur width before measuring", smoke=1)
    spread_channel: int = fixed_setting(0, "the channel measured")


def pixel_spread(inputs):
    settings = inputs.settings_as(SpreadSettings)
    return MetricResult(
        float(inputs.samples[:, settings.spread_channel].std()),
        card={"blur": settings.spread_blur, "channel": settings.spread_channel},
    )


SPREAD = Metric(
    compute=pixel_spread,
    higher_is_better=True,
    needs=frozenset(),
    version="1",
    reference="a test",
    definition="Standard deviation of the samples' pixels.",
    name="pixel_spread",
    display_order=135,  # between precision (130) and recall (140)
    settings=SpreadSettings,
    tolerance=Tolerance(absolute=0.2),
    roles=frozenset({"headline", "diversity"}),
)


@pytest.fixture
def spread_registered(monkeypatch):
    monkeypatch.setitem(METRICS._entries, "pixel_spread", SPREAD)


def test_a_new_metric_s_profile_settings_reach_the_runner_and_its_compute(spread_registered):
    assert profile_settings("smoke") == {**RECORDED_SETTINGS["smoke"], "spread_blur": 1}
    assert profile_settings("paper") == {**RECORDED_SETTINGS["paper"], "spread_blur": 3}  # no paper value: the default
    samples = torch.rand(6, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    outcomes, _ = evaluate(samples, reference=None, metric_names=["pixel_spread"], settings=profile_settings("smoke"))
    assert outcomes["pixel_spread"]["card"]["blur"] == 1
    # A fixed setting is not recorded per profile, but a Python caller still overrides it.
    outcomes, _ = evaluate(samples, reference=None, metric_names=["pixel_spread"], settings={"spread_channel": 1})
    assert outcomes["pixel_spread"]["card"]["blur"] == 3 and outcomes["pixel_spread"]["card"]["channel"] == 1
    assert outcomes["pixel_spread"]["value"] == pytest.approx(float(samples[:, 1].std()))


def record(method, seed, values, is_reference=False):
    return {
        "schema": 1,
        "status": "ok",
        "key": {"method": method, "split_id": SPLIT, "profile": "quick", "seed": seed},
        "method": {"name": method, "is_reference": is_reference},
        "evaluation": {"n_samples": 1000},
        "timings": {"fit": 1.0},
        "metrics": {
            name: {"status": "ok", "value": value, "card": {"n_samples": 1000}} for name, value in values.items()
        },
    }


def store_of(path, records):
    store = ResultStore(path)
    for rec in records:
        store.write(rec)
    return store


def table_lines(text, first_header_cell):
    start = next(i for i, line in enumerate(text.splitlines()) if line.startswith(f"| {first_header_cell} |"))
    lines = text.splitlines()[start:]
    return lines[: next(i for i, line in enumerate(lines) if not line.startswith("|"))]


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def test_a_new_metric_takes_its_place_in_the_leaderboard_and_its_verdict(tmp_path, spread_registered):
    store = store_of(
        tmp_path / "results",
        [
            record(
                "support-augment",
                0,
                {"fid": 50.0, "precision": 0.5, "recall": 0.02, "pixel_spread": 0.4},
                is_reference=True,
            ),
            # recall far above augmentation's, but a pixel spread below it: the diversity verdict, from pixel_spread alone
            record("narrow", 0, {"fid": 40.0, "precision": 0.6, "recall": 0.5, "pixel_spread": 0.3}),
            record("wide", 0, {"fid": 60.0, "precision": 0.4, "recall": 0.5, "pixel_spread": 0.6}),
        ],
    )
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    headline = table_lines(text, "#")
    assert cells(headline[0]) == ["#", "method", "fid ↓", "precision ↑", "pixel_spread ↑", "recall ↑", "verdict"]
    rows = {cells(line)[1].strip("*[]").split("]")[0]: cells(line) for line in headline[2:]}
    assert rows["narrow"][-1] == f"{AUGMENT_DIVERSITY.short} (copying not checked)"
    assert rows["wide"][-1] == "- (copying not checked)"
    assert rows["wide"][4] == "**0.600**"  # the best method value of a ↑ column is bold
    full = table_lines(text, "method")
    assert cells(full[0])[2:6] == ["fid ↓", "precision ↑", "pixel_spread ↑", "recall ↑"]
    assert "pixel_spread 0.3 <= support-augment 0.4" in next(line for line in full if line.startswith("| `narrow`"))
    legend = next(line for line in text.splitlines() if line.startswith(f"- **{AUGMENT_DIVERSITY.short}**"))
    assert "`pixel_spread`" in legend


def test_a_new_metric_s_tolerance_and_direction_reach_bench_check(tmp_path, spread_registered):
    values = {0: 0.5, 1: 0.7}  # mean 0.6: the declared absolute 0.2 is wider than the default 10% (0.06)
    source = store_of(tmp_path / "a", [record("vae", seed, {"pixel_spread": value}) for seed, value in values.items()])
    baseline = tmp_path / "baseline.json"
    write_baseline(source, baseline, relative=0.1, absolute=0.0)

    def verdict(shift):
        current = store_of(
            tmp_path / f"moved{shift}",
            [record("vae", seed, {"pixel_spread": value + shift}) for seed, value in values.items()],
        )
        (row,) = check(current, baseline)
        return row.status

    assert verdict(-0.15) == OK  # outside 10%, inside the declared 0.2
    assert verdict(-0.25) == REGRESSION
    assert verdict(+0.5) == OK  # higher is better: a rise never regresses


def test_a_new_metric_appears_in_the_generated_reference(spread_registered):
    reference = metric_reference()
    assert "## pixel_spread\n\nStandard deviation of the samples' pixels." in reference
    section = reference[reference.index("## pixel_spread") : reference.index("## recall")]
    assert (
        "| `spread_blur` | profile | 3 | 1 | 3 | 3 |" in section
        and "| `spread_channel` | fixed | 0 | 0 | 0 | 0 |" in section
    )
    assert "- tolerance: absolute 0.2" in section and "- roles: `diversity`, `headline`" in section


def test_the_committed_metric_reference_is_the_generated_one():
    result = CliRunner().invoke(app, ["list", "metrics", "--markdown", "--results-dir", str(ROOT / "results")])
    assert result.exit_code == 0, result.output
    committed = (ROOT / "docs" / "metric-reference.md").read_text()
    assert committed == result.stdout, f"docs/metric-reference.md is out of date: regenerate it with `{REGENERATE}`"


def test_markdown_is_listed_for_metrics_only():
    result = CliRunner().invoke(app, ["list", "methods", "--markdown"])
    assert result.exit_code == 2 and "metrics only" in result.output


# -- declarations are checked -------------------------------------------------------------------
def test_display_order_places_declared_metrics_first_and_the_rest_by_name(spread_registered):
    assert in_display_order(["zeta", "recall", "pixel_spread", "precision", "alpha"]) == [
        "precision",
        "pixel_spread",
        "recall",
        "alpha",
        "zeta",
    ]


def test_an_unknown_role_or_a_ranking_diagnostic_is_refused():
    common = dict(compute=pixel_spread, needs=frozenset(), version="1", reference="-", definition="-")
    with pytest.raises(ValueError, match="unknown roles"):
        Metric(higher_is_better=True, roles=frozenset({"hedline"}), **common)
    with pytest.raises(ValueError, match="cannot rank"):
        Metric(higher_is_better=None, roles=frozenset({"ranking"}), **common)


def test_two_metrics_that_disagree_on_a_shared_setting_are_refused(monkeypatch, spread_registered):
    @dataclass(frozen=True)
    class OtherBlur(MetricSettings):
        spread_blur: int = profile_setting(5, "another blur")

    monkeypatch.setitem(
        METRICS._entries, "other", Metric(**{**SPREAD.__dict__, "name": "other", "settings": OtherBlur})
    )
    with pytest.raises(ValueError, match="spread_blur"):
        profile_settings("quick")


def test_markdown_tables_escape_pipes_and_refuse_ragged_rows():
    assert markdown_table(["a", "b"], [["x|y", "z"]]) == ["| a | b |", "|---|---|", "| x\\|y | z |"]
    with pytest.raises(ValueError, match="2 cells under a header of 1"):
        markdown_table(["a"], [["1", "2"]])


def test_the_bootstrap_interval_is_the_range_for_few_seeds_and_inside_it_for_more():
    # With n <= 3 seeds a resample of n copies of the smallest (largest) seed has probability 1/n^n >= 1/27 > 2.5%,
    # so the percentile interval is exactly [min, max]; with 6 seeds it lies strictly inside.
    for values in ([0.2, 0.9], [3.0, 1.0, 2.0]):
        assert bootstrap_interval(np.array(values)) == (min(values), max(values))
    values = np.array([0.1, 0.5, 0.2, 0.9, 0.4, 0.3])
    low, high = bootstrap_interval(values)
    assert values.min() < low < values.mean() < high < values.max()
