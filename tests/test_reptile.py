"""Reptile (`bench.sdk.reptile`), checked against Algorithm 1 of Nichol et al. 2018 computed by hand in floats."""

import pytest
import torch
import torch.nn as nn

from bench.sdk.method import TrainingDiverged
from bench.sdk.reptile import MetaNetwork, reptile, reptile_step


def scalar_network(value: float) -> nn.Linear:
    network = nn.Linear(1, 1, bias=False, dtype=torch.float64)  # float64: the hand computation's precision
    with torch.no_grad():
        network.weight.fill_(value)
    return network


def weight(network: nn.Module) -> float:
    return network.weight.item()


def test_reptile_with_unit_sgd_lands_on_the_adapted_weights_and_interpolates_below():
    meta, adapted = nn.Linear(3, 2), nn.Linear(3, 2)
    start = [p.detach().clone() for p in meta.parameters()]
    target = [p.detach().clone() for p in adapted.parameters()]
    distance = reptile_step(meta, adapted, torch.optim.SGD(meta.parameters(), lr=1.0))
    assert distance == pytest.approx(sum((a - b).pow(2).sum() for a, b in zip(start, target)).sqrt().item())
    for p, t in zip(meta.parameters(), target):
        torch.testing.assert_close(p.detach(), t)
    meta.load_state_dict(dict(zip(("weight", "bias"), start)))
    reptile_step(meta, adapted, torch.optim.SGD(meta.parameters(), lr=0.25))
    for p, s, t in zip(meta.parameters(), start, target):
        torch.testing.assert_close(p.detach(), s + 0.25 * (t - s))


@pytest.mark.parametrize("anneal", [False, True])
def test_each_task_starts_from_phi_and_phi_moves_eps_of_the_way_to_the_trained_copy(anneal):
    # A perfect inner learner: training on task i sets W to the task's optimum t_i. Algorithm 1 then gives
    # phi <- phi + eps_i (t_i - phi), eps_i = eps (constant) or eps (1 - i / N) (annealed).
    targets = [2.0, -1.0, 0.5, 3.0, 1.5]
    eps, start = 0.4, 1.0
    meta, fast = scalar_network(start), scalar_network(99.0)
    seen_at_start = []

    def inner_loop(iteration: int) -> dict[str, float]:
        seen_at_start.append(weight(fast))
        with torch.no_grad():
            fast.weight.fill_(targets[iteration])
        return {"task": float(iteration)}

    network = MetaNetwork(meta, fast, torch.optim.SGD(meta.parameters(), lr=eps))
    log = reptile([network], inner_loop, len(targets), anneal=anneal, curve_points=len(targets))

    phi, expected_start, distances = start, [], []
    for i, t in enumerate(targets):
        expected_start.append(phi)
        distances.append(abs(phi - t))
        step = eps * (1 - i / len(targets)) if anneal else eps
        phi = phi + step * (t - phi)
    assert seen_at_start == pytest.approx(expected_start, rel=1e-12)
    assert weight(meta) == pytest.approx(phi, rel=1e-12)
    assert log["curve"]["reptile_distance"] == pytest.approx(distances, rel=1e-12)
    assert log["curve"]["task"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    # The summary is the mean over the last tenth of the iterations: here the last one.
    assert log["reptile_distance"] == pytest.approx(distances[-1], rel=1e-12)


def test_networks_meta_trained_together_log_their_own_distances():
    a_meta, a_fast, b_meta, b_fast = (
        scalar_network(0.0),
        scalar_network(0.0),
        scalar_network(10.0),
        scalar_network(10.0),
    )

    def inner_loop(iteration: int) -> dict[str, float]:
        with torch.no_grad():
            a_fast.weight.add_(1.0)
            b_fast.weight.sub_(3.0)
        return {}

    networks = [
        MetaNetwork(a_meta, a_fast, torch.optim.SGD(a_meta.parameters(), lr=1.0), "a"),
        MetaNetwork(b_meta, b_fast, torch.optim.SGD(b_meta.parameters(), lr=0.5), "b"),
    ]
    log = reptile(networks, inner_loop, 2, curve_points=2)
    assert log["curve"]["reptile_distance_a"] == pytest.approx([1.0, 1.0])
    assert log["curve"]["reptile_distance_b"] == pytest.approx([3.0, 3.0])
    assert weight(a_meta) == pytest.approx(2.0) and weight(b_meta) == pytest.approx(10.0 - 1.5 - 1.5)


def test_a_diverged_inner_loop_names_the_meta_iteration():
    meta, fast = scalar_network(0.0), scalar_network(0.0)

    def inner_loop(iteration: int) -> dict[str, float]:
        if iteration == 2:
            raise TrainingDiverged("inner loop: loss became nan at step 1")
        return {}

    with pytest.raises(TrainingDiverged, match="^meta-iteration 2: inner loop: loss became nan at step 1$"):
        reptile([MetaNetwork(meta, fast, torch.optim.SGD(meta.parameters(), lr=1.0))], inner_loop, 5)
