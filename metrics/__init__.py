"""Registered metrics: one module per metric, registry key = module name = CLI name.

A metric is data (`Metric`: direction, what it needs, version, reference, definition) plus a
pure function of an `EvalInputs`. What a metric needs is declared in `needs`:

- `"reference"`: the evaluation reference images (the novel class's test images);
- `"support"`: the k support images the method was given;
- `"evaluator"`: the dataset's domain evaluator (`EvalInputs.evaluator`, loaded by the harness);
- `"features"`: a feature space for the samples: the domain evaluator, or a standard network
  where the dataset has none (`EvalInputs.feature_space`, overridable by the `feature_extractor`
  setting); met unless the space is the domain evaluator and there is none;
- `"novel_class"`: the class the samples should depict;
- `"capability:<name>"`: a method capability (see `bench.sdk.method`), e.g. `capability:log_likelihood`.

When a need is not met the harness records the metric as not applicable with the reason;
it never records 0 and never crashes the run. A metric whose optional part is absent on this
machine (model files, pretrained weights, an OpenCV build) raises `MissingOptionalPart`: the
outcome is `unavailable` with the reason, which `bench check` reports as skipped, not as a
regression. Any other exception is an `error`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.sdk.registry import Registry, key_for_module


class MissingOptionalPart(FileNotFoundError):
    """A file or library the metric needs is absent on this machine; the message says how to get it."""


@dataclass
class EvalInputs:
    """Everything a metric may look at. Images are float tensors in [0, 1], shape (N, C, H, W)."""

    samples: torch.Tensor
    reference: torch.Tensor | None = None
    support: torch.Tensor | None = None
    # Images of the target distribution the method never saw, when the reference includes seen ones
    # (the unconditional protocol scores FID against the whole folder): the backtracking targets.
    held_out: torch.Tensor | None = None
    dataset: str | None = None  # registry name, for cards
    # The dataset's domain evaluator (bench.features.evaluator.DomainEvaluator), loaded by the harness when a metric
    # needs it; metrics never load it themselves.
    evaluator: Any = None
    # The feature space of fid, kid, precision, recall: "domain" (the evaluator) or "inception-v3-compat".
    feature_space: str = "domain"
    novel_class: int | None = None  # the class the samples should depict
    model: Any = None  # a fitted method, for capability metrics
    capabilities: frozenset[str] = frozenset()
    seed: int = 0
    # Per-run evaluation settings chosen by the caller (the runner sets them per profile, see
    # `bench.harness.runner.EVAL_SETTINGS`), e.g. {"nll_importance_samples": 100, "nll_max_images": 1000}.
    # A metric reads its own keys, falls back to a stated default and records what it used in its card.
    settings: dict = field(default_factory=dict)
    # Shared by the metrics of one evaluation (e.g. nearest-neighbour indices used by mse and ssim).
    cache: dict = field(default_factory=dict)
    # Why an input is absent, when the caller knows better than the generic message (e.g. Omniglot's
    # novel characters are not among the evaluator's classes, so there is no `novel_class`).
    need_reasons: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricResult:
    """A metric's value, extra numbers (`details`, e.g. a std) and how it was measured (`card`).

    `card` holds what is needed to compare two values: implementation and library version,
    feature extractor and its weights hash, image size and resize filter, sample counts. The
    harness adds the metric's version, direction and reference to it.
    """

    value: float
    details: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)


_NEED_MESSAGES = {
    "reference": "no evaluation reference images were given",
    "support": "no support images were given",
    "evaluator": "no domain evaluator was given (it is chosen by the dataset)",
    "features": "no domain evaluator was given (it is chosen by the dataset)",
    "novel_class": "no target class was given",
}


@dataclass(frozen=True)
class Metric:
    """A metric's metadata and its function. `name` is filled in from the module at registration."""

    compute: Callable[[EvalInputs], MetricResult]
    # None marks a diagnostic with no better direction (shown without an arrow, never ranked).
    higher_is_better: bool | None
    needs: frozenset[str]
    version: str
    reference: str
    definition: str
    name: str = ""
    # Over a task set (Omniglot: one task per novel character): "mean" computes the metric per task
    # and averages; "pooled" computes it once on all tasks' samples against all tasks' references
    # (distribution metrics: a task's 15-19 reference images are far too few on their own).
    across_tasks: str = "mean"

    @property
    def model_capabilities(self) -> frozenset[str]:
        """The method capabilities this metric runs the fitted model through (empty: it needs only images)."""
        return frozenset(need.split(":", 1)[1] for need in self.needs if need.startswith("capability:"))

    def runs_on(self, capabilities) -> bool:
        """Whether this metric runs the fitted model of a method with `capabilities`."""
        return bool(self.model_capabilities) and self.model_capabilities <= set(capabilities)

    def uses_evaluator(self, feature_space: str) -> bool:
        """Whether this metric reads the domain evaluator when the feature space is `feature_space`."""
        return "evaluator" in self.needs or ("features" in self.needs and feature_space == "domain")

    def missing_needs(self, inputs: EvalInputs) -> list[str]:
        missing = []
        for need in sorted(self.needs):
            if need == "features":
                if inputs.feature_space == "domain" and inputs.evaluator is None:
                    missing.append(inputs.need_reasons.get("evaluator") or _NEED_MESSAGES["features"])
            elif need.startswith("capability:"):
                capability = need.split(":", 1)[1]
                if inputs.model is None or capability not in inputs.capabilities:
                    missing.append(f"the method has no '{capability}' capability")
            elif getattr(inputs, need, None) is None:
                missing.append(inputs.need_reasons.get(need) or _NEED_MESSAGES.get(need, f"no {need} was given"))
        return missing

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓", None: "·"}[self.higher_is_better]

    def card(self, **measured) -> dict:
        """How this metric was measured: stored next to every value."""
        return {"version": self.version, "higher_is_better": self.higher_is_better, "reference": self.reference, **measured}


METRICS: Registry[Metric] = Registry("metric", "metrics", separator="_")


def register(metric: Metric, module_name: str) -> Metric:
    named = Metric(**{**metric.__dict__, "name": key_for_module(module_name, METRICS.separator)})
    return METRICS.register(named, module_name)


# Reading order in tables: distribution metrics on the evaluator's features, then latent-generator
# metrics, then per-sample quality and pixel metrics, then diagnostics. Unlisted metrics follow, sorted.
DISPLAY_ORDER = (
    "fid", "kid", "precision", "recall", "density", "coverage", "class_consistency",
    "lpips_backtrack", "lpips_backtrack_support", "nll",
    "brisque", "mse", "ssim",
    "support_nn_mse", "support_nn_shift_mse", "support_nn_feat",
)


def in_display_order(names) -> list[str]:
    names = set(names)
    listed = [name for name in DISPLAY_ORDER if name in names]
    return listed + sorted(names - set(listed))
