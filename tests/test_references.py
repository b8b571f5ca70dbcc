"""Reference rows (oracle, support copies) and the memorisation diagnostics that read against them."""

import numpy as np
import pytest
import torch
from conftest import requires_data

from bench.data.splits import load_dataset, to_float
from bench.harness.evaluation import evaluate
from bench.harness.executor import run_benchmark
from bench.harness.leaderboard import write_leaderboard
from bench.harness.plan import RunSpec
from bench.harness.store import ResultStore
from bench.sdk.method import ReferenceRow
from methods import METHODS, method_names

pytestmark = requires_data("fashion-mnist")
REFERENCES = ["oracle", "support-copy", "support-augment"]


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("references") / "results")
    spec = RunSpec(
        REFERENCES,
        dataset="fashion-mnist",
        shots=4,
        seeds=[0],
        profile="smoke",
        n_samples=500,
        metrics=["fid", "recall", "coverage", "support_nn_mse"],
    )
    outcomes = run_benchmark(spec, store)
    assert [o.status for o in outcomes] == ["ok"] * 3
    return {o.key.method: {name: m["value"] for name, m in o.record["metrics"].items()} for o in outcomes}


def test_the_oracle_beats_the_support_copies_on_fid_recall_and_coverage(reference_runs):
    oracle, copies = reference_runs["oracle"], reference_runs["support-copy"]
    assert oracle["fid"] < copies["fid"]
    assert oracle["recall"] > copies["recall"] + 0.5
    assert oracle["coverage"] > copies["coverage"] + 0.5


def test_support_copies_are_exact_copies_with_no_recall(reference_runs):
    copies = reference_runs["support-copy"]
    assert copies["support_nn_mse"] == pytest.approx(0, abs=1e-9)
    assert copies["recall"] < 0.05


def test_the_oracle_draws_unseen_train_images_only(fashion_split):
    oracle = METHODS.get("oracle")()
    oracle.fit(fashion_split.task_for(type(oracle)), None, 0)
    samples = oracle.sample(300, torch.Generator().manual_seed(0))
    _, data = load_dataset("fashion-mnist")
    unseen = to_float(data.train_images[list(fashion_split.unseen_novel_indices)])
    flat_samples, flat_support = samples.flatten(1), fashion_split.task.support.flatten(1)
    exact = "donot_use_mm_for_euclid_dist"  # the matmul shortcut is not exact at 0
    assert (torch.cdist(flat_samples, unseen.flatten(1), compute_mode=exact).min(1).values == 0).all()
    assert set(fashion_split.unseen_novel_indices).isdisjoint(fashion_split.info.support_indices)
    assert (torch.cdist(flat_samples, flat_support, compute_mode=exact).min(1).values > 0).all()
    assert len(torch.unique(flat_samples, dim=0)) == 300  # without replacement


def test_methods_never_see_the_unseen_images(fashion_split):
    assert fashion_split.task.unseen_novel is None

    class Cheater(ReferenceRow):
        is_reference = False
        sees_unseen_novel_images = True

        def prepare(self, task): ...

        def sample(self, n, generator): ...

    with pytest.raises(TypeError, match="only reference rows"):
        Cheater.validate_definition("cheater")


def test_all_means_every_method_then_the_reference_rows():
    names = method_names(references=False) + method_names(methods=False)
    assert set(REFERENCES) == set(method_names(methods=False))
    assert names[-3:] == sorted(REFERENCES) and "vae" in names[:-3]
    assert all(METHODS.get(name).is_reference for name in REFERENCES)


# -- the memorisation distances ----------------------------------------------------------------


@pytest.fixture(scope="module")
def shifted_and_unseen(fashion_split):
    """Support images moved by up to 2 px with brightness +-10%, and unseen real boots (1,000 each)."""
    generator = torch.Generator().manual_seed(0)
    support = fashion_split.task.support
    source = torch.arange(1000) % len(support)
    dx, dy = torch.randint(-2, 3, (2, 1000), generator=generator)
    gain = 0.9 + 0.2 * torch.rand(1000, generator=generator)
    shifted = torch.stack([torch.roll(support[i], (int(y), int(x)), dims=(-2, -1)) for i, x, y in zip(source, dx, dy)])
    shifted = (shifted * gain.view(-1, 1, 1, 1)).clamp(0, 1)
    _, data = load_dataset("fashion-mnist")
    unseen = to_float(data.train_images[list(fashion_split.unseen_novel_indices[:1000])])
    return shifted, unseen


def _memorisation(samples, split):
    outcomes, _ = evaluate(
        samples,
        reference=split.reference,
        support=split.task.support,
        dataset="fashion-mnist",
        novel_class=9,
        metric_names=["support_nn_mse", "support_nn_shift_mse", "support_nn_feat"],
    )
    return {name: outcome["value"] for name, outcome in outcomes.items()}


def test_shifted_copies_are_caught_by_the_shift_tolerant_and_feature_distances(fashion_split, shifted_and_unseen):
    shifted, unseen = (_memorisation(x, fashion_split) for x in shifted_and_unseen)
    # The plain pixel distance cannot tell shifted copies from new images: the reason for the other two.
    assert shifted["support_nn_mse"] > 0.8 * unseen["support_nn_mse"]
    assert shifted["support_nn_shift_mse"] < 0.25 * unseen["support_nn_shift_mse"]
    assert shifted["support_nn_feat"] < 0.5 * unseen["support_nn_feat"]


def test_the_shifted_distance_of_an_exact_shift_is_zero():
    support = torch.zeros(3, 1, 28, 28)
    support[:, :, 8:20, 8:20] = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    # Black borders: rolling by up to 2 px is then exactly a shift, whatever the padding.
    moved = torch.cat([torch.roll(support, shift, dims=(-2, -1)) for shift in [(1, -2), (-2, 2), (0, 1)]])
    outcomes, _ = evaluate(
        moved, reference=None, support=support, metric_names=["support_nn_mse", "support_nn_shift_mse"]
    )
    assert outcomes["support_nn_shift_mse"]["value"] < 1e-12 < outcomes["support_nn_mse"]["value"]
    beyond = torch.roll(support, (0, 3), dims=(-2, -1))
    outcomes, _ = evaluate(beyond, reference=None, support=support, metric_names=["support_nn_shift_mse"])
    assert outcomes["support_nn_shift_mse"]["value"] > 1e-3  # 3 px is beyond the default 2


# -- density and coverage -------------------------------------------------------------------


def _independent_density_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    real_real = np.linalg.norm(real[:, None] - real[None], axis=-1)
    radii = np.sort(real_real, axis=1)[:, k]  # column 0 is the point itself
    real_fake = np.linalg.norm(real[:, None] - fake[None], axis=-1)
    inside = real_fake < radii[:, None]
    return inside.sum(0).mean() / k, (real_fake.min(1) < radii).mean()


def test_density_and_coverage_match_an_independent_computation(fashion_split, shifted_and_unseen):
    from bench.features.evaluator import load_domain_evaluator

    samples = shifted_and_unseen[1][:400]
    outcomes, _ = evaluate(
        samples,
        reference=fashion_split.reference,
        dataset="fashion-mnist",
        novel_class=9,
        metric_names=["density", "coverage"],
    )
    evaluator = load_domain_evaluator("fashion-mnist")
    fake = evaluator.features_and_logits((samples * 255).round() / 255)[0].double().numpy()
    real = evaluator.features_and_logits(fashion_split.reference)[0].double().numpy()
    density, coverage = _independent_density_coverage(real, fake, 5)
    assert outcomes["density"]["value"] == pytest.approx(density, rel=1e-5)
    assert outcomes["coverage"]["value"] == pytest.approx(coverage, abs=2e-3)  # float32 ties at the ball edges
    assert outcomes["coverage"]["card"]["nearest_k"] == 5


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_density_and_coverage_streamed_in_blocks_equal_the_packages_whole_computation(block):
    from prdc import compute_prdc

    from metrics._prdc import density_coverage

    rng = np.random.default_rng(block)
    real = rng.normal(size=(60, 8)).astype(np.float32)
    fake = (rng.normal(size=(45, 8)) * 1.3 + 0.4).astype(np.float32)
    streamed = density_coverage(real, fake, 5, block=block)
    whole = compute_prdc(real, fake, 5)
    assert streamed["density"] == pytest.approx(whole["density"], rel=1e-12)
    assert streamed["coverage"] == pytest.approx(whole["coverage"], rel=1e-12)


# -- the leaderboard --------------------------------------------------------------------------

SPLIT = "fashion-mnist/novel9-4shot.v1"


def _record(method, values, is_reference=False):
    return {
        "schema": 1,
        "status": "ok",
        "key": {"method": method, "split_id": SPLIT, "profile": "smoke", "seed": 0},
        "method": {"name": method, "is_reference": is_reference},
        "evaluation": {"n_samples": 200},
        "timings": {"fit": 1.0},
        "artifacts": {},
        "metrics": {name: {"status": "ok", "value": value, "card": {"version": "1"}} for name, value in values.items()},
    }


def _rows(text, method):
    return [line for line in text.splitlines() if line.startswith(f"| `{method}`")]


def test_reference_rows_are_never_ranked_and_verdicts_name_what_failed(tmp_path):
    store = ResultStore(tmp_path / "results")
    floors = {"recall": 0.02, "coverage": 0.2, "support_nn_shift_mse": 0.02, "support_nn_feat": 14.0}
    for record in [
        _record("support-augment", floors, is_reference=True),
        _record(
            "support-copy", {"recall": 0.0, "coverage": 0.02, "support_nn_shift_mse": 0.0, "support_nn_feat": 0.0}, True
        ),
        _record(
            "oracle", {"recall": 0.86, "coverage": 0.97, "support_nn_shift_mse": 0.048, "support_nn_feat": 21.0}, True
        ),
        _record("generalises", {"recall": 0.4, "coverage": 0.6, "support_nn_shift_mse": 0.05, "support_nn_feat": 20.0}),
        _record(
            "copies-shifted", {"recall": 0.3, "coverage": 0.5, "support_nn_shift_mse": 0.003, "support_nn_feat": 20.0}
        ),
        _record("collapsed", {"recall": 0.3, "coverage": 0.1, "support_nn_shift_mse": 0.05, "support_nn_feat": 20.0}),
    ]:
        store.write(record)
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    reference_table = text.split("Reference rows (not ranked):")[1]
    method_table = text.split("Reference rows (not ranked):")[0]
    for name in REFERENCES:
        assert len(_rows(text, name)) == 1 and _rows(text, name)[0] in reference_table
        assert not _rows(method_table, name)
    assert _rows(text, "generalises")[0].endswith("| - |")
    copies = _rows(text, "copies-shifted")[0]
    assert "**copies the support set** (support_nn_shift_mse 0.003 <= support-augment 0.02)" in copies
    assert "no more diverse" not in copies
    collapsed = _rows(text, "collapsed")[0]
    assert "**no more diverse than its augmentation** (coverage 0.1 <= support-augment 0.2)" in collapsed
    assert "copies" not in collapsed  # a collapsed generator far from the support set does not copy it


def test_no_verdict_across_different_cards(tmp_path):
    store = ResultStore(tmp_path / "results")
    augment = _record("support-augment", {"coverage": 0.5}, is_reference=True)
    augment["metrics"]["coverage"]["card"] = {"version": "1", "feature_weights_sha256": "other"}
    store.write(augment)
    store.write(_record("low-coverage", {"coverage": 0.1}))
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    assert "not checked" in _rows(text, "low-coverage")[0]


def test_verdicts_are_judged_on_the_seeds_both_rows_have(tmp_path):
    store = ResultStore(tmp_path / "results")
    for seed, coverage in ((0, 0.10), (1, 0.30)):
        record = _record("support-augment", {"coverage": coverage}, is_reference=True)
        record["key"]["seed"] = seed
        store.write(record)
    method = _record("method", {"coverage": 0.2})  # seed 0 only: above the floor's seed 0, below its mean
    store.write(method)
    text = write_leaderboard(store, tmp_path / "leaderboard.md")[0].read_text()
    assert _rows(text, "method")[0].endswith("| - (copying not checked) |")  # no support distances were measured
