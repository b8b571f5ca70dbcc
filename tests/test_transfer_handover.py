"""`PretrainThenAdapt` hands one seeded noise stream from `pretrain` to `adapt` (`bench.sdk.method`)."""

import copy
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from bench.sdk.method import PROFILES, Method, PretrainThenAdapt


@dataclass(frozen=True)
class Draws:
    pretrain: int = 3
    adapt: int = 4


class RecordsItsNoise(PretrainThenAdapt, Method):
    """Draws numbers in each phase and keeps them: what a method's training would consume."""

    Config = Budget = Draws
    profiles = {profile: Draws() for profile in PROFILES}

    def pretrain_on_base(self, task, budget, seed, generator):
        self.seed_seen = seed
        self.pretrain_draws = torch.rand(budget.pretrain, generator=generator)

    def adapt_to_support(self, task, budget, generator):
        self.adapt_draws = torch.rand(budget.adapt, generator=generator)

    def sample(self, n, generator):
        return torch.zeros(n, 1, 2, 2)


# The phases here read nothing of the task; `pretrain` only asks whether it has what the method needs.
TASK = SimpleNamespace(base_images=torch.zeros(1, 1, 2, 2), class_descriptions=(), info=SimpleNamespace(dataset="none"))


def test_adapt_continues_the_stream_pretrain_started_from_the_seed():
    method = RecordsItsNoise()
    method.fit(TASK, Draws(), seed=11)
    one_stream = torch.rand(7, generator=torch.Generator().manual_seed(11))  # the same numbers, drawn in one go
    assert method.seed_seen == 11
    assert torch.equal(method.pretrain_draws, one_stream[:3]) and torch.equal(method.adapt_draws, one_stream[3:])


def test_copies_of_a_pretrained_method_adapt_with_the_same_numbers_as_fit():
    pretrained = RecordsItsNoise()
    pretrained.pretrain(TASK, Draws(), seed=5)
    first, second = copy.deepcopy(pretrained), copy.deepcopy(pretrained)
    first.adapt(TASK, Draws(), seed=5)
    second.adapt(TASK, Draws(), seed=5)
    fitted = RecordsItsNoise()
    fitted.fit(TASK, Draws(), seed=5)
    assert torch.equal(first.adapt_draws, fitted.adapt_draws) and torch.equal(second.adapt_draws, fitted.adapt_draws)


def test_adapt_before_pretrain_is_refused():
    with pytest.raises(RuntimeError, match="call pretrain first"):
        RecordsItsNoise().adapt(TASK, Draws(), seed=0)


def test_a_transfer_method_without_its_phases_is_abstract():
    class Incomplete(PretrainThenAdapt, Method):
        Config = Budget = Draws
        profiles = RecordsItsNoise.profiles

        def sample(self, n, generator):
            return torch.zeros(n, 1, 2, 2)

    with pytest.raises(TypeError, match="does not implement.*adapt_to_support.*pretrain_on_base"):
        Incomplete.validate_definition("incomplete")
