"""Registered metrics: one module per metric, registry key = module name = CLI name.

A metric is data (`Metric`: direction, what it needs, version, reference, definition, and the
rules the harness applies to it: display order, settings per profile, regression tolerance,
leaderboard roles) plus a pure function of an `EvalInputs`. Adding a metric touches its own file
only: the runner, the leaderboard, `bench check` and `bench list metrics --markdown` (the
generated docs/metric-reference.md) read these declarations. What a metric needs is declared in `needs`:

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

import dataclasses
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from bench.sdk.registry import Registry, key_for_module


class MissingOptionalPart(FileNotFoundError):
    """A file or library the metric needs is absent on this machine; the message says how to get it."""


_BY_PROFILE = "by_profile"  # field metadata: the values of a profile setting that differ from its default
_ABOUT = "about"  # field metadata: what the setting is, for the generated reference


def profile_setting(default: Any, about: str, **by_profile: Any) -> Any:
    """A settings field the runner sets per profile and records in the run (`evaluation.settings`, which
    decides whether a stored run is stale): `by_profile` names the profiles whose value differs from
    `default`; every other profile, and a call outside any profile, uses `default`."""
    return field(default=default, metadata={_BY_PROFILE: by_profile, _ABOUT: about})


def fixed_setting(default: Any, about: str) -> Any:
    """A settings field with one value in every profile, which the runner neither sets nor records (the card
    records the value used); only a Python caller overrides it (`evaluate(..., settings={name: value})`)."""
    return field(default=default, metadata={_ABOUT: about})


S = TypeVar("S", bound="MetricSettings")
T = TypeVar("T")


@dataclass(frozen=True)
class MetricSettings:
    """Base of a metric's settings: a frozen dataclass whose fields are made with `profile_setting` or
    `fixed_setting`. Field names are the keys of `EvalInputs.settings` and of the run record's
    `evaluation.settings`, shared by every metric that declares the same class (e.g. both backtracking
    metrics). A subclass checks its values in `__post_init__`."""

    @classmethod
    def for_profile(cls, profile: str) -> dict:
        """The profile settings' values in `profile`: what the runner hands the metrics and records."""
        return {
            f.name: f.metadata[_BY_PROFILE].get(profile, f.default)
            for f in dataclasses.fields(cls)
            if _BY_PROFILE in f.metadata
        }

    @classmethod
    def from_values(cls: type[S], values: dict) -> S:
        """The defaults, overridden by the keys of `values` that name a field of `cls` (others belong to other metrics)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    @classmethod
    def described(cls) -> list[tuple[str, str, Any, dict | None]]:
        """(name, what it is, default, {profile: value} or None for a fixed setting) of every field."""
        return [
            (
                f.name,
                f.metadata.get(_ABOUT, ""),
                f.default,
                dict(f.metadata[_BY_PROFILE]) if _BY_PROFILE in f.metadata else None,
            )
            for f in dataclasses.fields(cls)
        ]


@dataclass(frozen=True)
class Tolerance:
    """How far a metric's mean may move before `bench check` calls it a regression, written into the
    baseline entries of the metric by `bench baseline`; None keeps the baseline's default for that kind."""

    absolute: float | None = None
    relative: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {kind: value for kind, value in dataclasses.asdict(self).items() if value is not None}


# What a metric does in the leaderboard besides its column in the full tables (`Metric.roles`).
# The leaderboard's `VERDICT_RULES` give the two verdicts (which reference rows are the floor, the wording).
ROLES = {
    "headline": "a key metric: a column of each section's headline table",
    "ranking": "ranks the methods: the headline's order and the class rotation's per-class rank table "
    "(the first ranking metric in display order; it needs a direction)",
    "copying": "read by the copying verdict: a method at or below the copy reference rows copies the support set",
    "diversity": "read by the diversity verdict: a method at or below `support-augment` is no more diverse than "
    "its augmentation",
    "report": "one of the FIGR/GAN report's metrics (its Table 1), kept to compare with it; the degenerate-set table "
    "(docs/metrics.md#degenerate-sets) shows what it rewards on this benchmark's data",
}


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
    # Per-run evaluation settings chosen by the caller, by field name of the metrics' `MetricSettings`
    # (the runner passes the profile's, `profile_settings(profile)`), e.g. {"nll_importance_samples": 100}.
    # A metric reads its own with `settings_as` (defaults for absent keys) and records what it used in its card.
    settings: dict = field(default_factory=dict)
    # The features of the image sets in the evaluation's feature spaces, each set extracted once
    # (bench.features.extraction.FeatureBank, built by the harness): `features.extract("samples")`.
    features: Any = None
    # Why an input is absent, when the caller knows better than the generic message (e.g. Omniglot's
    # novel characters are not among the evaluator's classes, so there is no `novel_class`).
    need_reasons: dict[str, str] = field(default_factory=dict)
    _shared: dict = field(default_factory=dict, init=False, repr=False)

    def settings_as(self, settings_class: type[S]) -> S:
        """The caller's `settings` read as `settings_class`: its defaults where the caller set nothing."""
        return settings_class.from_values(self.settings)

    def shared(self, compute: Callable[..., T], *args: Hashable) -> T:
        """`compute(self, *args)`, computed once per evaluation: the metrics that read one computation share it
        (fid, kid, precision and recall one torch-fidelity pass; mse and ssim one nearest-neighbour search)."""
        key = (compute, args)
        if key not in self._shared:
            self._shared[key] = compute(self, *args)
        return self._shared[key]


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
    # Reading order in tables, smallest first; the hundreds are the group: 1xx distribution metrics on the
    # evaluator's features, 2xx latent-generator metrics, 3xx per-sample quality and pixel metrics, 4xx
    # diagnostics. Metrics without one follow, by name.
    display_order: int | None = None
    # The settings class the metric reads (`EvalInputs.settings_as`); None: it has none.
    settings: type[MetricSettings] | None = None
    # Written into baselines where the default band (relative 10%) says too little; None: the default.
    tolerance: Tolerance | None = None
    roles: frozenset[str] = frozenset()  # keys of `ROLES`

    def __post_init__(self):
        unknown = sorted(set(self.roles) - set(ROLES))
        if unknown:
            raise ValueError(f"metric {self.name or '?'}: unknown roles {unknown} (valid: {', '.join(ROLES)})")
        if "ranking" in self.roles and self.higher_is_better is None:
            raise ValueError(f"metric {self.name or '?'}: a diagnostic (no direction) cannot rank methods")
        if self.settings is not None and not issubclass(self.settings, MetricSettings):
            raise TypeError(
                f"metric {self.name or '?'}: settings must be a MetricSettings subclass, got {self.settings!r}"
            )

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
        return {
            "version": self.version,
            "higher_is_better": self.higher_is_better,
            "reference": self.reference,
            **measured,
        }


METRICS: Registry[Metric] = Registry("metric", "metrics", separator="_", entry_point_group="fewshot_bench.metrics")


def register(metric: Metric, module_name: str) -> Metric:
    named = Metric(**{**metric.__dict__, "name": key_for_module(module_name, METRICS.separator)})
    return METRICS.register(named, module_name)


def in_display_order(names) -> list[str]:
    """`names` in reading order (`Metric.display_order`); those without one, or not registered, follow by name."""
    registered = set(METRICS.names())

    def position(name: str) -> tuple:
        order = METRICS.get(name).display_order if name in registered else None
        return (order is None, order or 0, name)

    return sorted(set(names), key=position)


def profile_settings(profile: str, names: list[str] | None = None) -> dict:
    """Every registered metric's (or only `names`') profile settings in `profile`: what the runner hands the metrics
    and records in the run (`evaluation.settings`). Two metrics declaring one key must agree on its value."""
    merged: dict = {}
    declared_by: dict[str, str] = {}
    for name in in_display_order(METRICS.names() if names is None else names):
        declared = METRICS.get(name).settings
        for key, value in (declared.for_profile(profile) if declared else {}).items():
            if key in merged and merged[key] != value:
                raise ValueError(
                    f"setting '{key}' is {merged[key]!r} for {declared_by[key]} but {value!r} for {name} "
                    f"in profile '{profile}'"
                )
            merged[key] = value
            declared_by.setdefault(key, name)
    return merged


def metrics_with_role(role: str) -> list[str]:
    """The registered metrics playing `role` (a key of `ROLES`), in display order."""
    if role not in ROLES:
        raise ValueError(f"unknown role '{role}' (valid: {', '.join(ROLES)})")
    return [name for name in in_display_order(METRICS.names()) if role in METRICS.get(name).roles]
