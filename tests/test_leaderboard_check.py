import json
import statistics

import pytest

from bench.harness.check import BASELINE_SCHEMA, BaselineError, check, write_baseline
from bench.harness.leaderboard import card_fingerprint, write_leaderboard
from bench.harness.store import ResultStore

SPLIT = "fashion-mnist/novel9-4shot.v1"


def record(method, seed, mse=None, ssim=None, status="ok", is_reference=False, profile="quick"):
    rec = {
        "schema": 1,
        "key": {"method": method, "split_id": SPLIT, "profile": profile, "seed": seed},
        "status": status,
        "method": {"name": method, "is_reference": is_reference},
        "evaluation": {"n_samples": 1000},
        "timings": {"fit": 12.0},
        "artifacts": {"grid": f"grids/{SPLIT}/{method}/{profile}/seed{seed}.png"},
    }
    if status == "ok":
        rec["metrics"] = {
            "mse": {"status": "ok", "value": mse},
            "ssim": {"status": "ok", "value": ssim},
            "support_nn_mse": {"status": "not_applicable", "reason": "no support images were given"},
        }
    else:
        rec["failure"] = {"reason": "diverged"}
    return rec


@pytest.fixture
def store(tmp_path):
    s = ResultStore(tmp_path / "results")
    for rec in [
        record("vae", 0, 0.06, 0.20),
        record("vae", 1, 0.07, 0.25),
        record("vae", 2, 0.05, 0.30),
        record("gan", 0, 0.09, 0.10),
        record("gan", 1, status="failed"),
        record("support-copy", 0, 0.04, 0.50, is_reference=True),
    ]:
        s.write(rec)
    return s


def _row(text, method):
    return next(line for line in text.splitlines() if line.startswith(f"| `{method}`"))


def test_leaderboard_rows_are_mean_and_std_over_seeds(store, tmp_path):
    path, errors = write_leaderboard(store, tmp_path / "leaderboard.md")
    text = path.read_text()
    assert not errors
    assert f"## {SPLIT} · profile `quick`" in text
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert "mse ↓" in header and "ssim ↑" in header
    assert "support_nn_mse" not in header  # never scored in these records
    vae = _row(text, "vae")
    assert f"{statistics.mean([0.06, 0.07, 0.05]):.4f} ± {statistics.stdev([0.06, 0.07, 0.05]):.4f}" in vae
    assert f"{statistics.mean([0.2, 0.25, 0.3]):.4f} ± {statistics.stdev([0.2, 0.25, 0.3]):.4f}" in vae
    assert "| 3 |" in vae and f"[grid](results/grids/{SPLIT}/vae/quick/seed0.png)" in vae
    assert "1 (1 failed)" in _row(text, "gan")


def test_failed_runs_are_listed_with_their_reason(store, tmp_path):
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    listed = text.split("Failed runs")[1].split("\n\n")[1].splitlines()
    assert listed == ["- `gan` seed 1 (failed): diverged"]  # the fixture's one failed record, and only it


def test_reference_rows_get_their_own_table(store, tmp_path):
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    section = text.split("Reference rows (not ranked):")
    assert len(section) == 2
    methods_table = section[0].split("All metrics")[1]
    assert "`support-copy`" in section[1] and "`support-copy`" not in methods_table
    # In the headline the reference rows sit below the methods, unranked and in italics.
    headline = [line for line in section[0].split("All metrics")[0].splitlines() if line.startswith("| ")]
    assert headline[-1].startswith("| ref | *[support-copy]")


def test_leaderboard_is_a_pure_function_of_the_records(store, tmp_path):
    first = write_leaderboard(store, tmp_path / "a.md")[0].read_text()
    second = write_leaderboard(store, tmp_path / "b.md")[0].read_text()
    assert first == second


def test_unreadable_records_are_reported_not_fatal(store, tmp_path):
    bad = store.root / "runs" / "broken.json"
    bad.write_text("{not json")
    path, errors = write_leaderboard(store, tmp_path / "leaderboard.md")
    assert len(errors) == 1 and "broken.json" in errors[0]
    assert "`vae`" in path.read_text()


def _baseline(tmp_path, entries, **default):
    path = tmp_path / "baseline.json"
    path.write_text(
        json.dumps(
            {
                "schema": BASELINE_SCHEMA,
                "default_tolerance": default or {"absolute": 0.0, "relative": 0.1},
                "entries": entries,
            }
        )
    )
    return path


def _entry(method, metric, mean, seeds=(0, 1, 2), **tol):
    # The records above carry no card: every value is measured with the empty card.
    entry = {
        "split_id": SPLIT,
        "profile": "quick",
        "method": method,
        "metric": metric,
        "mean": mean,
        "card": card_fingerprint({}),
        "seeds": list(seeds),
    }
    if tol:
        entry["tolerance"] = tol
    return entry


def test_check_follows_each_metrics_direction(store, tmp_path):
    # vae: mse mean 0.06 (lower is better), ssim mean 0.25 (higher is better).
    path = _baseline(
        tmp_path,
        [
            _entry("vae", "mse", 0.059),  # 0.06 within 10% of 0.059: ok
            _entry("vae", "mse", 0.05),  # 0.06 > 0.05 + 0.005: regression
            _entry("vae", "mse", 0.07),  # better than baseline: ok
            _entry("vae", "ssim", 0.30, absolute=0.01),  # 0.25 < 0.30 - 0.03: regression
            _entry("vae", "ssim", 0.20),  # better: ok
            _entry("dcgan", "mse", 0.1, seeds=[0]),  # no current result: regression
        ],
    )
    verdicts = [row.regressed for row in check(store, path)]
    assert verdicts == [False, True, False, True, False, True]


def test_written_baseline_passes_against_its_own_results(store, tmp_path):
    count = write_baseline(store, tmp_path / "b.json", relative=0.05, absolute=0.0)
    assert count == 6  # mse and ssim of vae, gan and support-copy; not-applicable metrics have no entry
    assert not any(row.regressed for row in check(store, tmp_path / "b.json"))


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", "not a baseline file"),
        ("{", "not valid JSON"),
        ('{"schema": 2, "entries": [{"method": "vae"}]}', "lacks"),
    ],
)
def test_malformed_baselines_say_what_is_wrong(tmp_path, store, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BaselineError, match=message):
        check(store, path)
    with pytest.raises(BaselineError, match="no such baseline"):
        check(store, tmp_path / "missing.json")


def test_bootstrap_interval_brackets_the_mean_within_the_range_of_seeds():
    import numpy as np

    from bench.harness.leaderboard import bootstrap_interval

    values = np.array([0.06, 0.07, 0.05, 0.09])
    low, high = bootstrap_interval(values)
    assert values.min() <= low < values.mean() < high <= values.max()
    assert bootstrap_interval(np.array([0.3, 0.3, 0.3])) == (0.3, 0.3)


def test_values_measured_with_different_cards_are_not_silently_compared(tmp_path):
    store = ResultStore(tmp_path / "results")
    a, b = record("vae", 0, 0.06, 0.2), record("gan", 0, 0.08, 0.1)
    a["metrics"]["mse"]["card"] = {"n_samples": 1000}
    b["metrics"]["mse"]["card"] = {"n_samples": 200}
    c = record("vae", 1, 0.07, 0.2)
    c["metrics"]["mse"]["card"] = {"n_samples": 500}
    for rec in (a, b, c):
        store.write(rec)
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    assert "cards differ across seeds" in _row(text, "vae")
    # gan is the only row with a single mse card, so it is the majority: no footnote, and no card tags anywhere.
    assert "0.0800 |" in _row(text, "gan") and "(card " not in text and "Not comparable" not in text


def test_flagged_values_carry_their_flag_as_a_footnote(tmp_path):
    store = ResultStore(tmp_path / "results")
    flagged, clean = record("vae", 0, 0.06, 0.2), record("gan", 0, 0.08, 0.1)
    flagged["metrics"]["mse"]["flag"] = "100 images < 128 feature dimensions"
    for rec in (flagged, clean):
        store.write(rec)
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    assert "0.0600†" in _row(text, "vae") and "†" not in _row(text, "gan")
    assert "† 100 images < 128 feature dimensions" in text


def test_columns_follow_the_metric_reading_order(store, tmp_path):
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert header.index("mse") < header.index("ssim")
    from metrics import in_display_order

    assert in_display_order(["support_nn_mse", "zeta", "fid", "alpha", "mse"]) == [
        "fid",
        "mse",
        "support_nn_mse",
        "alpha",
        "zeta",
    ]


def test_seeds_in_a_card_do_not_split_the_aggregate(tmp_path):
    store = ResultStore(tmp_path / "results")
    for seed, mse in ((0, 0.06), (1, 0.08)):
        rec = record("vae", seed, mse, 0.2)
        rec["metrics"]["mse"]["card"] = {"n_samples": 1000, "noise_seed": 1234 + seed}
        store.write(rec)
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    assert "0.0700 ± 0.0141" in _row(text, "vae")
    assert "cards differ" not in text and "Not comparable" not in text


def test_class_rotation_ranks_methods_per_class_and_averages_the_ranks():
    import pandas as pd

    from bench.harness.leaderboard import class_ranks

    def rows(method, novel_class, fid, recall, card="a", is_reference=False):
        base = {"method": method, "novel_class": novel_class, "status": "ok", "is_reference": is_reference}
        return [
            {**base, "metric": "fid", "value": fid, "card": card},
            {**base, "metric": "recall", "value": recall, "card": card},
        ]

    scores = pd.DataFrame(
        rows("a", 0, 10.0, 0.5)
        + rows("b", 0, 20.0, 0.5)
        + rows("c", 0, 30.0, 0.1)  # recall: a and b tie
        + rows("a", 1, 50.0, 0.2)
        + rows("b", 1, 40.0, 0.3)
        + rows("c", 1, 45.0, 0.9, card="other")  # class 1 fid: cards differ
        + rows("oracle", 0, 1.0, 0.9, is_reference=True)
    )
    ranks = class_ranks(scores).set_index(["novel_class", "metric", "method"])["rank"]
    assert ranks[(0, "fid", "a")] == 1 and ranks[(0, "fid", "c")] == 3  # lower FID is better
    assert ranks[(0, "recall", "a")] == ranks[(0, "recall", "b")] == 1.5 and ranks[(0, "recall", "c")] == 3
    assert (1, "fid", "a") not in ranks.index  # differing cards: the class is not ranked on that metric
    assert "oracle" not in ranks.index.get_level_values("method")


def test_published_numbers_sit_beside_ours_in_the_publication_unit(tmp_path):
    store = ResultStore(tmp_path / "results")
    for seed, mse in ((0, 0.04), (1, 0.06)):
        store.write(record("dcgan", seed, mse, 0.7))
    store.write(record("vae", 0, 0.05, 0.5))  # not in the publication: no row in its comparison
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    section = text[text.index("Compared with Batra") :]
    row = _row(section, "dcgan").split(" | ")
    # MSE: published 3689.11 on the 0-255 scale; ours is the seed mean 0.05 on [0, 1], i.e. 0.05 * 255**2 = 3251.25.
    assert row[1:5] == ["3,689", "3,251", "0.84", "0.7"]
    assert "| `vae`" not in section.split("\n\n")[1]
    assert "does not say which image pairs" in section


def test_a_published_ordering_is_checked_on_the_measured_means(tmp_path):
    from bench.harness.leaderboard import claim_verdict, scores_frame
    from bench.harness.published import IMLE_COVERAGE_CLAIM

    def coverage_record(method, seed, value):
        rec = record(method, seed, 0.05, 0.5)
        rec["key"]["split_id"] = "fashion-mnist/novel9-100shot.v1"
        rec["metrics"]["coverage"] = {"status": "ok", "value": value}
        return rec

    holding = scores_frame(
        [
            coverage_record("rsimle", 0, 0.5),
            coverage_record("adaimle", 0, 0.4),
            coverage_record("imle", 0, 0.1),
            coverage_record("imle", 1, 0.3),
        ]
    )
    assert "**held**" in claim_verdict(IMLE_COVERAGE_CLAIM, holding) and "`imle` 0.2" in claim_verdict(
        IMLE_COVERAGE_CLAIM, holding
    )
    broken = scores_frame(
        [coverage_record("rsimle", 0, 0.1), coverage_record("adaimle", 0, 0.4), coverage_record("imle", 0, 0.1)]
    )
    assert "**did not hold**" in claim_verdict(IMLE_COVERAGE_CLAIM, broken)
    partial = scores_frame([coverage_record("imle", 0, 0.1)])
    assert "Not checked here" in claim_verdict(IMLE_COVERAGE_CLAIM, partial)


def test_descriptive_card_keys_do_not_split_rows_but_measurement_keys_do():
    from bench.harness.leaderboard import card_fingerprint

    card = {"version": "1", "feature_weights_sha256": "abc", "n_samples": 1000, "sample_seed": 3}
    same = {**card, "evaluator_trained_on": "all classes of the train split", "sample_seed": 4}
    assert card_fingerprint(card) == card_fingerprint(same)
    assert card_fingerprint(card) != card_fingerprint({**card, "feature_weights_sha256": "abd"})
