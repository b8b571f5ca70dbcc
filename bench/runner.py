"""The sweep: for each method and seed, build the split, fit, sample, evaluate, store.

Everything a run did is timed per phase (`split`, the method's own `fit` phases, `sample`,
`evaluate` per metric, `store`) and written into its record. A run that fails (a diverged
loss, an exception in the method, invalid samples) is recorded as failed with its reason and
the sweep goes on; an interrupted run (Ctrl-C, kill) writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from bench.datasets import DATASETS
from bench.environment import environment, git_commit, utc_now
from bench.evaluation import evaluate
from bench.grids import save_grid
from bench.method import Method, TrainingDiverged
from bench.progress import NullReporter, Reporter
from bench.splits import Split, make_split
from bench.store import RECORD_SCHEMA, ResultStore, RunKey, atomic_write_bytes
from methods import METHODS
from metrics import METRICS

# Samples drawn for evaluation per profile (about the size of the evaluation reference: 1,000 ankle boots, 1,009 MNIST 9s).
EVAL_SAMPLES = {"smoke": 200, "quick": 1000, "paper": 1000}
# Metric settings per profile, handed to every metric as `EvalInputs.settings`. `nll`: IWAE
# importance samples per image and how many evaluation-reference images are scored (the first
# N of the split's fixed order; None = all of them: 1,000 Fashion-MNIST, 1,009 MNIST). Measured on the
# 2-core CPU (smoke VAE, same compute as any VAE): quick ~14 s idle, ~50 s under load; paper ~12 min idle.
EVAL_SETTINGS = {
    "smoke": {"nll_importance_samples": 8, "nll_max_images": 64,
              "backtrack_images": 16, "backtrack_steps": 30, "backtrack_restarts": 1, "backtrack_lr": 0.05},
    "quick": {"nll_importance_samples": 100, "nll_max_images": None,
              "backtrack_images": 100, "backtrack_steps": 200, "backtrack_restarts": 3, "backtrack_lr": 0.05},
    "paper": {"nll_importance_samples": 5000, "nll_max_images": None,
              "backtrack_images": 100, "backtrack_steps": 1000, "backtrack_restarts": 5, "backtrack_lr": 0.05},
}


def derive_seed(seed: int, purpose: str) -> int:
    """An independent, stable seed for one purpose (e.g. sampling) derived from the run's seed."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "little") >> 1


@dataclass
class RunSpec:
    methods: list[str]
    dataset: str
    shots: int = 4
    seeds: list[int] = field(default_factory=lambda: [0])
    profile: str = "quick"
    novel_class: int | str | None = None  # None: the dataset's default; "all": each class in turn
    device: str = "cpu"
    n_samples: int | None = None  # default: EVAL_SAMPLES[profile]
    metrics: list[str] | None = None  # default: every registered metric
    overwrite: bool = False


@dataclass
class RunOutcome:
    key: RunKey
    status: str  # ok | failed | skipped
    record: dict | None = None


def check_samples(samples: torch.Tensor, n: int, image_shape: tuple[int, int, int]) -> None:
    if tuple(samples.shape) != (n, *image_shape):
        raise ValueError(f"sample() returned shape {tuple(samples.shape)}, expected {(n, *image_shape)}")
    if not torch.isfinite(samples).all():
        raise TrainingDiverged("samples contain NaN or infinite values")
    if samples.min() < 0 or samples.max() > 1:
        raise ValueError(f"sample() returned values in [{samples.min():.3g}, {samples.max():.3g}], expected [0, 1]")


def run_one(
    method_name: str,
    split: Split,
    spec: RunSpec,
    store: ResultStore,
    reporter: Reporter,
    split_seconds: float = 0.0,
) -> dict:
    """Fit, sample, evaluate and store one (method, split, seed, profile); return the record."""
    info = split.info
    seed = info.seed
    cls: type[Method] = METHODS.get(method_name)
    budget = cls.budget_for(spec.profile)
    n_samples = spec.n_samples or EVAL_SAMPLES[spec.profile]
    key = RunKey(method_name, info.split_id, spec.profile, seed)
    method = cls(device=spec.device)
    method.reporter = reporter
    timings: dict[str, float] = {"split": split_seconds}
    record = {
        "schema": RECORD_SCHEMA,
        "key": key.to_dict(),
        "status": "ok",
        "method": {
            "name": method_name,
            "title": cls.title,
            "version": cls.version,
            "reference": cls.reference,
            "is_reference": cls.is_reference,
            "capabilities": sorted(cls.capabilities),
            "config": dataclasses.asdict(method.config),
            "budget": dataclasses.asdict(budget),
        },
        "split": info.to_dict(),
        "evaluation": {
            "n_samples": n_samples,
            "sample_seed": derive_seed(seed, "sample"),
            "evaluation_seed": derive_seed(seed, "evaluate"),
            "settings": dict(EVAL_SETTINGS[spec.profile]),
        },
        "code": git_commit(),
        "environment": environment(spec.device),
        "created_at": utc_now(),
    }
    started = time.perf_counter()
    try:
        fit_start = time.perf_counter()
        method.fit(split.task_for(cls), budget, seed)
        timings["fit"] = time.perf_counter() - fit_start
        timings.update({f"fit.{phase}": seconds for phase, seconds in method.timings.items()})
        sample_start = time.perf_counter()
        with torch.no_grad():
            samples = method.sample(n_samples, torch.Generator().manual_seed(derive_seed(seed, "sample"))).float().cpu()
        check_samples(samples, n_samples, split.task.image_shape)
        # Scored exactly as stored: 8-bit, so `bench evaluate` on the stored file reproduces the record.
        samples = (samples * 255).round() / 255
        timings["sample"] = time.perf_counter() - sample_start
    except Exception as exc:  # a failed run is data: recorded with its reason, the sweep goes on
        record["status"] = "failed"
        record["failure"] = {
            "type": type(exc).__name__,
            "reason": str(exc),
            "diverged": isinstance(exc, TrainingDiverged),
            "traceback": traceback.format_exc(limit=6),
        }
        record["training_log"] = method.training_log
        record["timings"] = {**timings, "total": time.perf_counter() - started}
        store.write(record)
        return record

    record["training_log"] = method.training_log
    timings["evaluator"] = prepare_evaluator(info.dataset, spec.metrics, reporter)
    eval_start = time.perf_counter()
    record["metrics"], metric_timings = evaluate(
        samples,
        reference=split.reference,
        support=split.task.support,
        dataset=info.dataset,
        novel_class=info.novel_class,
        model=method,
        metric_names=spec.metrics,
        seed=derive_seed(seed, "evaluate"),
        settings=EVAL_SETTINGS[spec.profile],
        reporter=reporter,
    )
    timings["evaluate"] = time.perf_counter() - eval_start
    timings.update({f"evaluate.{name}": seconds for name, seconds in metric_timings.items()})

    store_start = time.perf_counter()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, samples=(samples * 255).round().to(torch.uint8).numpy())
    atomic_write_bytes(store.samples_path(key), buffer.getvalue())
    save_grid(store.grid_path(key), split.task.support, samples)
    record["artifacts"] = {
        "samples": str(store.samples_path(key).relative_to(store.root)),
        "grid": str(store.grid_path(key).relative_to(store.root)),
    }
    timings["store"] = time.perf_counter() - store_start
    record["timings"] = {**timings, "total": time.perf_counter() - started}
    store.write(record)
    return record


def prepare_evaluator(dataset: str, metric_names: list[str] | None, reporter: Reporter | None) -> float:
    """Load the domain evaluator (training it on first use, minutes) as its own timed phase; return seconds.

    A failure here is left to the metrics that need the evaluator: each records it as its error.
    """
    from bench.evaluator import load_domain_evaluator

    names = metric_names if metric_names is not None else METRICS.names()
    start = time.perf_counter()
    if any("dataset" in METRICS.get(name).needs for name in names):  # the need that means "uses the evaluator"
        try:
            load_domain_evaluator(dataset, reporter=reporter)
        except Exception:  # noqa: BLE001 - recorded per metric by evaluate()
            pass
    return time.perf_counter() - start


def _matches(record: dict, method_name: str, split: Split, spec: RunSpec) -> bool:
    """Whether a stored record was measured as `spec` asks: same data, method version and budget,
    sample count and evaluation settings, and every requested metric at its current version."""
    cls = METHODS.get(method_name)
    stored_metrics = record.get("metrics", {})
    wanted = spec.metrics if spec.metrics is not None else METRICS.names()
    return (
        record["split"]["sha256"] == split.info.sha256
        and record["method"]["version"] == cls.version
        and record["method"]["budget"] == dataclasses.asdict(cls.budget_for(spec.profile))
        and record["evaluation"]["n_samples"] == (spec.n_samples or EVAL_SAMPLES[spec.profile])
        and record["evaluation"].get("settings") == EVAL_SETTINGS[spec.profile]
        and all(stored_metrics.get(name, {}).get("card", {}).get("version") == METRICS.get(name).version for name in wanted)
    )


def run_benchmark(
    spec: RunSpec,
    store: ResultStore,
    reporter: Reporter | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Run every (method, seed) of `spec`.

    A run already stored with status `ok` is skipped unless `spec.overwrite`, or unless it was
    measured differently (see `_matches`: data, method version, budget, sample count, evaluation
    settings, metric versions): then it is stale and run again.
    """
    reporter = reporter or NullReporter()
    outcomes: list[RunOutcome] = []
    classes = DATASETS.get(spec.dataset).novel_classes(spec.novel_class)
    for novel_class, method_name, seed in itertools.product(classes, spec.methods, spec.seeds):
        split_start = time.perf_counter()
        split = make_split(spec.dataset, spec.shots, seed, novel_class)
        split_seconds = time.perf_counter() - split_start
        key = RunKey(method_name, split.info.split_id, spec.profile, seed)
        if not spec.overwrite and store.is_complete(key) and _matches(store.load(key), method_name, split, spec):
            outcome = RunOutcome(key, "skipped", store.load(key))
        else:
            record = run_one(method_name, split, spec, store, reporter, split_seconds)
            outcome = RunOutcome(key, record["status"], record)
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    return outcomes
