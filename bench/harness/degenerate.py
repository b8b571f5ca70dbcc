"""Degenerate sample sets: what each metric rewards that it should not (`bench degenerate`).

Every metric that scores a set of samples is applied, exactly as `bench evaluate` applies it, to real unseen
images of the novel class and to six sets no generator should be rewarded for. A metric orders a case correctly
when the real images score strictly better, in its direction, than the case's set. The table is stored under
`results/degenerate/`, rendered into docs/metrics.md and the metric reference, and read by the leaderboard (which
marks the metrics a case fools) and by the tests that keep every verdict on metrics not fooled by the cases the
verdict is about (`VerdictRule.must_order`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from bench.data.splits import load_dataset, make_split, to_float
from bench.harness.api import evaluate
from bench.harness.degenerate_tables import verdicts
from bench.sdk.progress import NullReporter, Reporter

TABLE_VERSION = 1


@dataclass(frozen=True)
class Material:
    """What the cases are made from: `real` unseen images of the novel class, and images of the nearest other class."""

    real: np.ndarray  # (n, C, H, W) float32 in [0, 1]
    other: np.ndarray  # (n, C, H, W), the base class whose mean image is nearest the novel class's
    other_class: str
    rng: np.random.Generator

    def _from_mean(self) -> np.ndarray:
        return np.square(self.real - self.real.mean(0)).reshape(len(self.real), -1).mean(1)

    @property
    def typical(self) -> np.ndarray:
        """The real image nearest the real images' mean (pixel MSE): the copy a pixel metric rewards most."""
        return self.real[int(self._from_mean().argmin())]

    @property
    def outlying(self) -> np.ndarray:
        """The real image farthest from the real images' mean: the outlier that widens a k-NN radius most."""
        return self.real[int(self._from_mean().argmax())]


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    build: Callable[[Material], np.ndarray]


def _repeat(image: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(image[None], n, axis=0)


def _background(real: np.ndarray) -> np.ndarray:
    """A blank image: every pixel the median of the real images' border pixels (black on Fashion-MNIST)."""
    border = np.concatenate([real[:, :, 0], real[:, :, -1], real[:, :, :, 0], real[:, :, :, -1]], axis=-1)
    return np.broadcast_to(np.median(border, axis=(0, 2))[:, None, None], real.shape[1:]).astype(np.float32)


def _noise(material: Material) -> np.ndarray:
    real = material.real
    noise = material.rng.normal(real.mean(), real.std(), size=real.shape)
    return np.clip(noise, 0, 1).astype(np.float32)


def _blanks_plus_one(material: Material) -> np.ndarray:
    sets = _repeat(_background(material.real), len(material.real)).copy()
    sets[-1] = material.outlying
    return sets


def _blurred(material: Material) -> np.ndarray:
    side = material.real.shape[-1]
    sigma = side / 28  # 1 pixel on 28 x 28 images
    images = material.real.transpose(0, 2, 3, 1)  # (n, H, W, C): OpenCV blurs each image's channels
    blurred = np.stack([cv2.GaussianBlur(image, (0, 0), sigma) for image in images])
    return blurred.reshape(material.real.shape[0], side, side, -1).transpose(0, 3, 1, 2)


CASES = (
    Case(
        "one image repeated",
        "the real image nearest the real images' mean (pixel MSE), repeated",
        lambda m: _repeat(m.typical, len(m.real)),
    ),
    Case("class mean", "the mean of the real images, repeated", lambda m: _repeat(m.real.mean(0), len(m.real))),
    Case("noise", "Gaussian noise with the real images' pixel mean and deviation, clipped to [0, 1]", _noise),
    Case("another class", "real images of the base class whose mean image is nearest the class's", lambda m: m.other),
    Case(
        "blanks plus one",
        "blank images (the real images' border value) and the real image farthest from their mean",
        _blanks_plus_one,
    ),
    Case("blurred", "the real images blurred by a Gaussian of 1 pixel per 28 of side", _blurred),
)


def material(dataset: str, novel_class: int | str | None, shots: int, seed: int, n: int) -> tuple[Material, dict]:
    """The real unseen images and the nearest other class of a split, and where they come from."""
    split = make_split(dataset, shots, seed, novel_class)
    spec, data = load_dataset(split.info.dataset)
    rng = np.random.default_rng(seed)
    unseen = np.asarray(split.unseen_novel_indices)
    if len(unseen) < n:
        raise ValueError(
            f"{split.info.split_id}: only {len(unseen)} unseen train images of the class; use --n {len(unseen)}"
        )
    real_indices = np.sort(rng.choice(unseen, size=n, replace=False))
    real = to_float(data.train_images[real_indices]).numpy()
    novel = split.info.novel_class
    means = {c: data.train_images[data.train_labels == c].mean(0) for c in range(spec.num_classes) if c != novel}
    novel_mean = data.train_images[data.train_labels == novel].mean(0)
    other = min(means, key=lambda c: float(np.square(means[c] - novel_mean).mean()))
    other_indices = np.flatnonzero(data.train_labels == other)
    other_indices = np.sort(rng.choice(other_indices, size=min(n, len(other_indices)), replace=False))
    provenance = {
        "dataset": split.info.dataset,
        "split_id": split.info.split_id,
        "seed": seed,
        "novel_class": split.info.novel_class_name,
        "real": f"{n} train images of class {split.info.novel_class_name!r} outside the support set (seeded draw)",
        "other_class": spec.class_names[other],
    }
    return Material(real, to_float(data.train_images[other_indices]).numpy(), spec.class_names[other], rng), provenance


def measure(
    dataset: str = "fashion-mnist",
    novel_class: int | str | None = None,
    shots: int = 4,
    seed: int = 0,
    n: int = 1000,
    metrics: Sequence[str] | str | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Score the real images and every case with every sample metric (or `metrics`); the table as a JSON-able dict."""
    reporter = reporter or NullReporter()
    stuff, provenance = material(dataset, novel_class, shots, seed, n)
    sets = {"real": stuff.real, **{case.name: case.build(stuff) for case in CASES}}
    scores: dict[str, dict[str, float]] = {}
    cards: dict[str, dict] = {}
    progress = reporter.task(f"degenerate sets of {provenance['split_id']}", total=len(sets))
    for name, images in sets.items():
        evaluation = evaluate(
            torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
            dataset=dataset,
            novel_class=novel_class,
            shots=shots,
            seed=seed,
            metrics=metrics,
        )
        for metric, outcome in evaluation.outcomes.items():
            if outcome["status"] == "ok":
                scores.setdefault(metric, {})[name] = float(outcome["value"])
                cards.setdefault(metric, outcome.get("card", {}))
        progress.advance()
    progress.close()
    return {
        "table_version": TABLE_VERSION,
        "provenance": {**provenance, "n": n, "shots": shots},
        "cases": {case.name: case.description for case in CASES},
        "scores": scores,
        "verdicts": {metric: verdicts(metric, values) for metric, values in scores.items()},
        "cards": cards,
    }
