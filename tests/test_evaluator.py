"""The domain evaluator's training is a pure function of its data and config."""

from types import SimpleNamespace

import numpy as np
import torch

from bench.evaluator import DomainCNN, EvaluatorConfig, _train, weights_digest
from bench.progress import NullReporter


def _tiny_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=512).astype(np.uint8)
    images = (rng.random((512, 1, 12, 12)) * 80).astype(np.uint8)
    images[np.arange(512), 0, labels * 4, :] = 255  # a learnable class signal: a bright row per class
    images.setflags(write=False)  # as the loaded memory-mapped arrays are
    return SimpleNamespace(train_images=images, train_labels=labels, test_images=images[:128], test_labels=labels[:128])


def test_training_twice_gives_identical_weights_and_a_different_seed_does_not():
    config = EvaluatorConfig(width=4, epochs=1, batch_size=64)
    first, card = _train(_tiny_data(), (1, 12, 12), 3, config, NullReporter())
    second, _ = _train(_tiny_data(), (1, 12, 12), 3, config, NullReporter())
    other, _ = _train(_tiny_data(), (1, 12, 12), 3, EvaluatorConfig(width=4, epochs=1, batch_size=64, seed=1), NullReporter())
    assert weights_digest(first) == weights_digest(second)
    assert weights_digest(first) != weights_digest(other)
    assert card["test_accuracy"] > 0.6  # well above chance (1/3): training did run


def test_weights_digest_sees_every_parameter():
    model = DomainCNN((1, 12, 12), 3, 4)
    before = weights_digest(model)
    with torch.no_grad():
        model.classifier[1].bias[0] += 1e-6
    assert weights_digest(model) != before
