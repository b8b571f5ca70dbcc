"""What a sweep will run, resolved once: one `RunPlan` per (novel class, seed, training seed, method).

A `RunSpec` is what the user asked for (the CLI's options); `plan_run` resolves one of its runs (a
`bench.harness.executor.RunUnit`) into a plan: the split or task set (built once per novel class and seed, shared
by that seed's methods), the
method class, the profile's budget, the number of samples, the metric settings, the seeds the
run derives for sampling and evaluation, and the hash of everything that decides whether a
stored record still measures what the plan asks. A single split is a task set of one task
(`RunPlan.tasks`); only the seed names and the record's layout tell the two apart.

Two seeds make a run: `seed` draws the support set (the split), `train_seed` seeds the method's
initialisation and training noise. They are separate so that the two sources of variance can be told
apart, and so that a method's base-class pretraining, which never sees the support set, is shared by every
support draw at one training seed (`bench.harness.pretraining`). Reference rows do not train: they run at
training seed 0 only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from bench.data.splits import Split, TaskSet, default_characters
from bench.harness.store import RunKey
from bench.sdk.method import Method
from methods import METHODS
from metrics import METRICS, profile_settings

# Samples drawn for evaluation per profile (about the size of the evaluation reference: 1,000 ankle boots, 1,009 MNIST 9s).
EVAL_SAMPLES = {"smoke": 200, "quick": 1000, "standard": 1000, "paper": 1000}
# The metric settings of a profile (handed to every metric as `EvalInputs.settings` and recorded) are
# declared by the metrics: `metrics.profile_settings(profile)`.


def derive_seed(seed: int, purpose: str) -> int:
    """An independent, stable seed for one purpose (e.g. sampling) derived from the run's seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "little") >> 1


@dataclass
class RunSpec:
    """A sweep as the user asks for it: methods x seeds (x novel classes) on one dataset at one profile."""

    methods: list[str]
    # A registered name, or a `folder:PATH[@SIZE]` spec as given (a worker process resolves it again: the folder's
    # generated name is registered only in the process that read the folder).
    dataset: str
    # Keyword-only from here: a field added later must not shift the meaning of a positional argument.
    _: KW_ONLY
    shots: int = 4
    seeds: list[int] = field(default_factory=lambda: [0])  # support draws
    train_seeds: list[int] = field(default_factory=lambda: [0])  # the methods' initialisation and training noise
    profile: str = "quick"
    novel_class: int | str | None = None  # None: the dataset's default; "all": each class in turn
    characters: int | None = None  # novel characters per run (omniglot-characters); None: `default_characters`
    device: str = "cpu"  # where methods train
    eval_device: str | None = None  # where the feature pass, evaluator and model metrics run (default: `device`)
    n_samples: int | None = None  # default: EVAL_SAMPLES[profile]
    metrics: list[str] | None = None  # default: every registered metric
    overwrite: bool = False
    imports: tuple[str, ...] = ()  # modules that register methods or metrics from outside the package (`--import`)

    @property
    def characters_per_run(self) -> int:
        return self.characters or default_characters(self.profile)


def samples_drawn(split: Split | TaskSet, requested: int) -> int:
    """Images a run draws: `requested` for one task; for a task set, `requested // tasks` per task (at least 2)."""
    if isinstance(split, TaskSet):
        return max(2, requested // len(split.splits)) * len(split.splits)
    return requested


@dataclass(frozen=True)
class RunPlan:
    """One run, resolved: everything the runner, the artefact writers and the scorer read."""

    method: str
    method_class: type[Method]
    split: Split | TaskSet
    profile: str
    budget: Any
    n_samples: int
    settings: dict
    metrics: list[str] | None  # None: every registered metric
    device: str = "cpu"  # where the method trains
    eval_device: str = "cpu"  # where the feature pass and the domain evaluator run
    split_seconds: float = 0.0  # time spent building the split (charged to the first run that uses it)
    train_seed: int = 0  # the seed `fit` receives: initialisation and training noise

    @property
    def seed(self) -> int:
        """The support draw (the split's seed)."""
        return self.split.info.seed

    @property
    def key(self) -> RunKey:
        return RunKey(self.method, self.split.info.split_id, self.profile, self.seed, self.train_seed)

    @property
    def is_task_set(self) -> bool:
        return isinstance(self.split, TaskSet)

    @property
    def tasks(self) -> list[Split]:
        """The splits the method is fitted to, one model each: the task set's tasks, or the split alone."""
        return list(self.split.splits) if self.is_task_set else [self.split]

    @property
    def samples_per_task(self) -> int:
        return self.n_samples // len(self.tasks)

    # Sampling and evaluation noise derive from the support draw only: runs at different training seeds share
    # them (common random numbers), so what differs between them is the fitted model.
    def sample_seed(self, task: int = 0) -> int:
        return derive_seed(self.seed, f"sample:{task}" if self.is_task_set else "sample")

    def evaluation_seed(self) -> int:
        return derive_seed(self.seed, "evaluate")

    @property
    def metric_names(self) -> list[str]:
        return self.metrics if self.metrics is not None else METRICS.names()

    @property
    def config_hash(self) -> str:
        """sha256 of what a stored record must share with this plan to be reused (see `record_config_hash`)."""
        return _config_hash(
            self.split.info.sha256,
            self.method_class.version,
            dataclasses.asdict(self.budget),
            None if self.method_class.is_reference else self.train_seed,
            self.n_samples,
            self.settings,
            {name: METRICS.get(name).version for name in self.metric_names},
        )


def _config_hash(
    split_sha256: str,
    method_version: str,
    budget: dict,
    train_seed: int | None,
    n_samples: int,
    settings: dict,
    metric_versions: dict[str, str | None],
) -> str:
    content = {
        "split": split_sha256,
        "method_version": method_version,
        "budget": budget,
        "train_seed": train_seed,
        "n_samples": n_samples,
        "settings": settings,
        "metric_versions": dict(sorted(metric_versions.items())),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def record_config_hash(record: dict, metric_names: list[str]) -> str:
    """The same hash computed from a stored record: equal to the plan's when the record measured the same data with
    the same method version and budget, sample count and metric settings, and every metric at its current version."""
    stored_metrics = record.get("metrics", {})
    # Records written before training seeds existed trained at their support draw's seed.
    train_seed = (
        None if record["method"].get("is_reference") else record["key"].get("train_seed", record["key"]["seed"])
    )
    return _config_hash(
        record["split"]["sha256"],
        record["method"]["version"],
        record["method"]["budget"],
        train_seed,
        record["evaluation"]["n_samples"],
        record["evaluation"].get("settings"),
        {name: stored_metrics.get(name, {}).get("card", {}).get("version") for name in metric_names},
    )


def plan_run(
    spec: RunSpec, method: str, split: Split | TaskSet, split_seconds: float = 0.0, train_seed: int = 0
) -> RunPlan:
    method_class = METHODS.get(method)
    return RunPlan(
        method=method,
        method_class=method_class,
        split=split,
        profile=spec.profile,
        budget=method_class.budget_for(spec.profile),
        n_samples=samples_drawn(split, spec.n_samples or EVAL_SAMPLES[spec.profile]),
        settings=profile_settings(spec.profile),
        metrics=spec.metrics,
        device=spec.device,
        eval_device=spec.eval_device or spec.device,
        split_seconds=split_seconds,
        train_seed=train_seed,
    )
