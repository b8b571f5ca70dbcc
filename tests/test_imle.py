"""The IMLE core and its three selection rules, against independent computations and by meaning."""

import pytest
import torch
from conftest import requires_data

from methods._imle import IMLEBudget, pairwise_squared_distances
from methods.adaimle import AdaptiveIMLE
from methods.imle import IMLE
from methods.rsimle import RejectionSamplingIMLE


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
    radius = method.config.rejection_radius
    # Sample 0 is within epsilon of example 1 (and nearest to example 0 too): rejected for both.
    distances = torch.tensor([[radius * 0.9, radius * 3, radius * 2], [radius * 0.5, radius * 5, radius * 4]])
    index, take = method.select(distances, None)
    assert take.all() and index.tolist() == [2, 2]
    assert method.rejections == [pytest.approx(1 / 3)]
    # Every sample rejected: nobody takes a new code.
    _, take = method.select(torch.full((2, 3), radius / 2), torch.zeros(2))
    assert not take.any()


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

    plain, pretrained = METHODS.get("imle")(), METHODS.get("imle-pretrained")()
    plain.fit(fashion_split.task, plain.profiles["smoke"], 0)
    pretrained.fit(fashion_split.task, pretrained.profiles["smoke"], 0)
    assert "pretrain" not in plain.timings and "pretrain" not in plain.training_log
    assert pretrained.timings["pretrain"] > 0 and len(pretrained.training_log["pretrain"]["curve"]["loss"]) == 2
    z = plain.sample_latent(4, torch.Generator().manual_seed(0))
    assert not torch.allclose(plain.decode(z), pretrained.decode(z))
