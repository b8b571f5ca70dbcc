"""The IMLE core and its three selection rules, against independent computations and by meaning."""

import dataclasses
import math

import pytest
import torch
from conftest import requires_data

from bench.data.splits import make_split
from bench.harness.pretraining import base_only
from methods._imle import IMLEBudget, pairwise_squared_distances
from methods._perceptual import MatchingNet, PerceptualMatching
from methods.adaimle import AdaptiveIMLE
from methods.imle import IMLE
from methods.rsimle import RejectionSamplingIMLE, rejected_samples, rejection_threshold


def test_chunked_distances_equal_brute_force():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(7, 1, 5, 5, generator=generator), torch.rand(23, 1, 5, 5, generator=generator)
    expected = (a.flatten(1)[:, None] - b.flatten(1)[None]).pow(2).mean(-1)
    torch.testing.assert_close(pairwise_squared_distances(a, b, chunk=4), expected, rtol=1e-5, atol=1e-7)


def test_vanilla_imle_rematches_every_example_to_its_nearest_sample():
    distances = torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 0.7]])
    index, take = IMLE().select(distances, None)
    assert index.tolist() == [1, 0] and take.all()


def test_adaptive_examples_reselect_only_once_their_sample_is_within_the_threshold():
    method = AdaptiveIMLE()  # staleness 1 round, forced after 5
    index, take = method.select(torch.tensor([[1.0, 2.0], [4.0, 3.0]]), None)
    assert take.all() and index.tolist() == [0, 1]
    torch.testing.assert_close(method.thresholds, torch.tensor([0.98, 0.98 * 3.0]))
    # Example 0's sample is now at 0.9 (< 0.98): it re-selects and its threshold tightens to 0.98 * 0.9.
    # Example 1's sample is at 3.0 (> 2.94): it keeps its code and threshold.
    pool = torch.tensor([[0.5, 5.0], [6.0, 0.1]])
    index, take = method.select(pool, torch.tensor([0.9, 3.0]))
    assert take.tolist() == [True, False] and index[0] == 0
    torch.testing.assert_close(method.thresholds, torch.tensor([0.98 * 0.9, 0.98 * 3.0]))
    # Stuck for 5 rounds, example 1 re-selects anyway.
    for _ in range(3):
        assert not method.select(pool, torch.tensor([10.0, 3.0]))[1][1]
    assert method.select(pool, torch.tensor([10.0, 3.0]))[1][1]


def test_rejection_sampling_never_selects_a_sample_near_any_training_image():
    method = RejectionSamplingIMLE()
    method.prepare_selection(torch.tensor([[0.0], [2.0]]))  # spacing 2: epsilon 0.7 x 2
    assert method.epsilon_squared == pytest.approx(1.4**2)
    # Sample 0 is within epsilon of example 1 (and nearest to example 0 too): rejected for both.
    distances = torch.tensor([[1.9, 3.0, 2.0], [0.5, 5.0, 4.0]])
    index, take = method.select(distances, None)
    assert take.all() and index.tolist() == [2, 2]
    assert method.rejections == [pytest.approx(1 / 3)]


def test_each_training_image_rejects_only_its_nearest_share_of_the_pool():
    # Brute force: image i rejects those of its ceil(share x m / n) nearest samples that lie within epsilon.
    generator = torch.Generator().manual_seed(3)
    distances = torch.rand(6, 40, generator=generator)
    epsilon_squared, share = 0.3, 0.5
    expected = set()
    for row in distances.tolist():
        nearest = sorted(range(40), key=row.__getitem__)[: math.ceil(share * 40 / 6)]
        expected |= {j for j in nearest if row[j] < epsilon_squared}
    assert set(rejected_samples(distances, epsilon_squared, share).nonzero().flatten().tolist()) == expected


def test_a_collapsed_generator_still_gets_fresh_codes():
    # Every pool sample within epsilon of every training image (a generator drawing one tile near all of them):
    # at most half the pool is rejected and every example takes a new code, so the round still teaches.
    method = RejectionSamplingIMLE()
    method.prepare_selection(torch.tensor([[0.0], [2.0], [4.0], [6.0]]))  # epsilon 1.4
    distances = torch.rand(4, 100, generator=torch.Generator().manual_seed(0))  # all under 1.4^2
    index, take = method.select(distances, torch.ones(4))
    assert take.all() and method.rejections[0] <= 0.5
    assert not rejected_samples(distances, method.epsilon_squared, 0.5)[index].any()


def test_with_every_sample_rejected_nobody_takes_a_new_code():
    method = RejectionSamplingIMLE(dataclasses.replace(RejectionSamplingIMLE.Config(), rejection_share=1.0))
    method.prepare_selection(torch.tensor([[0.0], [2.0]]))
    _, take = method.select(torch.tensor([[0.1, 0.2, 5.0], [5.0, 0.3, 0.1]]), torch.zeros(2))
    assert method.rejections == [1.0] and not take.any()


def test_epsilon_is_a_fraction_of_the_median_spacing_of_the_training_images():
    points = torch.rand(9, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    # Brute force: each image's distance (root of the mean squared difference) to its nearest other image.
    spacing = sorted(
        min(float((points[i] - points[j]).pow(2).mean().sqrt()) for j in range(9) if j != i) for i in range(9)
    )[4]
    assert rejection_threshold(points, 0.5) == pytest.approx((0.5 * spacing) ** 2, rel=1e-5)
    assert rejection_threshold(points[:1], 0.5) == 0  # one image: no spacing, nothing rejected


def test_the_perceptual_embedding_measures_lpips_form_plus_weighted_l2():
    net = MatchingNet((1, 12, 12), classes=3)
    matching = PerceptualMatching(net, pixel_weight=0.1)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 1, 12, 12, generator=generator), torch.rand(5, 1, 12, 12, generator=generator)
    expected = torch.zeros(3, 5)
    with torch.no_grad():
        for fx, fy in zip(net.features(x), net.features(y), strict=True):  # per layer: unit channel vectors
            ux, uy = torch.nn.functional.normalize(fx, dim=1), torch.nn.functional.normalize(fy, dim=1)
            expected += (ux[:, None] - uy[None]).pow(2).sum(2).mean((2, 3))
        expected += 0.1 * (x[:, None] - y[None]).pow(2).mean((2, 3, 4))
        embedded_x, embedded_y = matching.embed(x), matching.embed(y)
    torch.testing.assert_close(torch.cdist(embedded_x, embedded_y).pow(2), expected, rtol=1e-4, atol=1e-5)


@requires_data("fashion-mnist")
@pytest.mark.parametrize("matching", ["pixel", "perceptual"])
def test_at_100_shots_epsilon_rejects_a_share_of_what_a_model_of_the_class_would_sample(matching):
    # A model that had learnt the class samples its other images: the rule must reject some of them at 100 shots
    # (a fixed 0.01 per-pixel MSE rejected 0.25% of them; RS-IMLE then runs as IMLE) and not most of them.
    split = make_split("fashion-mnist", 100, seed=0)
    task = split.task_with_unseen_novel()
    method = RejectionSamplingIMLE()
    method.pretrain(
        base_only(task), dataclasses.replace(method.budget_for("smoke"), matching=matching, matching_steps=100), 0
    )
    method.prepare_selection(method._embed_all(task.support))
    method.select(
        pairwise_squared_distances(method._embed_all(task.support), method._embed_all(task.unseen_novel)), None
    )
    assert 0.02 < method.rejections[0] < 0.5


@requires_data("fashion-mnist")
@pytest.mark.parametrize("cls", [IMLE, AdaptiveIMLE, RejectionSamplingIMLE])
def test_training_pulls_samples_towards_the_training_images(cls, fashion_split):
    method = cls()
    method.fit(fashion_split.task, IMLEBudget(rounds=15, steps_per_round=10, pool_size=64), 0)
    curve = method.training_log["imle"]["curve"]
    assert curve["nearest_distance"][-1] < 0.5 * curve["nearest_distance"][0]
    assert method.timings["nearest_neighbours"] > 0 and method.timings["update"] > 0


@requires_data("fashion-mnist")
def test_pretrained_entries_pretrain_on_the_base_classes_and_plain_ones_do_not(fashion_split):
    from methods import METHODS

    class CountingReporter:  # how far each reported loop advanced
        def __init__(self):
            self.advanced: dict[str, int] = {}

        def task(self, description, total):
            reporter = self

            class Handle:
                def advance(self, amount=1):
                    reporter.advanced[description] = reporter.advanced.get(description, 0) + amount

                def close(self):
                    pass

            return Handle()

    plain, pretrained = METHODS.get("imle")(), METHODS.get("imle-pretrained")()
    pretrained.reporter = CountingReporter()
    plain.fit(fashion_split.task, plain.profiles["smoke"], 0)
    pretrained.fit(fashion_split.task, pretrained.profiles["smoke"], 0)
    assert "pretrain" not in plain.timings and "pretrain" not in plain.training_log
    assert pretrained.timings["pretrain"] > 0 and len(pretrained.training_log["pretrain"]["curve"]["loss"]) == 2
    # The base-class phase reports its progress round by round, as the support phase does.
    assert pretrained.reporter.advanced == {"IMLE rounds on the base classes": 2, "IMLE rounds": 4}
    z = plain.sample_latent(4, torch.Generator().manual_seed(0))
    assert not torch.allclose(plain.decode(z), pretrained.decode(z))


def test_an_unknown_matching_distance_is_refused_when_the_budget_is_built():
    with pytest.raises(ValueError, match="perceptual, pixel"):
        IMLEBudget(rounds=1, steps_per_round=1, pool_size=8, matching="lpips")
    with pytest.raises(ValueError, match="matching_steps"):
        IMLEBudget(rounds=1, steps_per_round=1, pool_size=8, matching="perceptual")


def test_only_paper_matches_perceptually():
    for cls in (IMLE, RejectionSamplingIMLE):
        assert {name: budget.matching for name, budget in cls.profiles.items()} == {
            "smoke": "pixel",
            "quick": "pixel",
            "standard": "pixel",
            "paper": "perceptual",
        }
