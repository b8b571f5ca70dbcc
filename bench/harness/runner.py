"""The sweep: for each method and seed, build the split, fit, sample, evaluate, store.

Everything a run did is timed per phase (`split`, the method's own `fit` phases, `sample`,
`evaluate` per metric, `store`) and written into its record. A run that fails (a diverged
loss, an exception in the method, invalid samples) is recorded as failed with its reason and
the sweep goes on; an interrupted run (Ctrl-C, kill) writes nothing.
"""

from __future__ import annotations

import copy
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

from bench.harness.checkpoints import save_checkpoint
from bench.data.datasets import DATASETS
from bench.harness.environment import environment, git_commit, utc_now
from bench.harness.evaluation import Ruler, aggregate_over_tasks, evaluate, mark_pooled, prepare_ruler
from bench.harness.grids import save_grid, save_task_grid
from bench.sdk.method import Method, TrainingDiverged
from bench.harness.plots import LATENT_PLOT_BASE_PER_CLASS, LATENT_PLOT_QUERIES, save_latent_projection, save_loss_curves
from bench.sdk.progress import NullReporter, Reporter
from bench.data.splits import DEFAULT_CHARACTERS, Split, TaskSet, make_run_split
from bench.harness.store import RECORD_SCHEMA, ResultStore, RunKey
from bench.sdk.files import atomic_write_bytes
from methods import METHODS
from metrics import METRICS, in_display_order, profile_settings

# Samples drawn for evaluation per profile (about the size of the evaluation reference: 1,000 ankle boots, 1,009 MNIST 9s).
EVAL_SAMPLES = {"smoke": 200, "quick": 1000, "paper": 1000}
# The metric settings of a profile (handed to every metric as `EvalInputs.settings` and recorded) are
# declared by the metrics: `metrics.profile_settings(profile)`.


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
    characters: int = DEFAULT_CHARACTERS  # novel characters per run (omniglot-characters protocol)
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


def samples_drawn(split: Split | TaskSet, requested: int) -> int:
    """Images a run draws: `requested` for one task; for a task set, `requested // tasks` per task (at least 2)."""
    if isinstance(split, TaskSet):
        return max(2, requested // len(split.splits)) * len(split.splits)
    return requested


def run_one(
    method_name: str,
    split: Split | TaskSet,
    spec: RunSpec,
    store: ResultStore,
    reporter: Reporter,
    split_seconds: float = 0.0,
) -> dict:
    """Fit, sample, store the artefacts of, and evaluate one (method, split or task set, seed, profile); return the record.

    Generate, then score: the samples (and, for methods that model metrics run, the fitted models)
    are stored before any metric runs, so `bench rescore` can score them again without training.
    """
    info = split.info
    seed = info.seed
    cls: type[Method] = METHODS.get(method_name)
    budget = cls.budget_for(spec.profile)
    n_samples = samples_drawn(split, spec.n_samples or EVAL_SAMPLES[spec.profile])
    key = RunKey(method_name, info.split_id, spec.profile, seed)
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
            "config": dataclasses.asdict(cls.Config()),
            "budget": dataclasses.asdict(budget),
        },
        "split": info.to_dict(),
        "evaluation": {
            "n_samples": n_samples,
            "sample_seed": derive_seed(seed, "sample"),
            "evaluation_seed": derive_seed(seed, "evaluate"),
            "settings": profile_settings(spec.profile),
        },
        "code": git_commit(),
        "environment": environment(spec.device),
        "created_at": utc_now(),
    }
    if isinstance(split, TaskSet):
        record["evaluation"]["n_samples_per_task"] = n_samples // len(split.splits)
    started = time.perf_counter()
    training_log: dict = {}
    task_logs: list[dict] = []
    try:
        samples, models = _fit_and_sample(cls, split, spec, budget, n_samples, reporter, timings, training_log, task_logs)
    except Exception as exc:  # a failed run is data: recorded with its reason, the sweep goes on
        record["status"] = "failed"
        record["failure"] = {
            "type": type(exc).__name__,
            "reason": str(exc),
            "diverged": isinstance(exc, TrainingDiverged),
            "traceback": traceback.format_exc(limit=6),
        }
        record["training_log"] = training_log
        record["timings"] = {**timings, "total": time.perf_counter() - started}
        store.write(record)
        return record
    record["training_log"] = training_log

    store_start = time.perf_counter()
    record["artifacts"] = store_artifacts(store, key, split, samples, models, training_log)
    timings["store"] = time.perf_counter() - store_start
    if isinstance(split, Split) and models[0].has("embed"):
        start = time.perf_counter()
        save_latent_projection(store.latent_plot_path(key), latent_groups(models[0], split),
                               f"{method_name} latent space (PCA) · {info.split_id} · seed {seed}")
        record["artifacts"]["latent_plot"] = str(store.latent_plot_path(key).relative_to(store.root))
        timings["latent_plot"] = time.perf_counter() - start

    record["metrics"], task_metrics = score(split, samples, models, profile_settings(spec.profile), spec.metrics,
                                                 reporter, timings)
    if task_metrics is not None:
        record["tasks"] = [{**task, "metrics": outcomes, "training_log": log}
                           for task, outcomes, log in zip(info.tasks, task_metrics, task_logs)]
    record["timings"] = {**timings, "total": time.perf_counter() - started}
    store.write(record)
    return record


def needs_checkpoint(cls: type[Method]) -> bool:
    """Whether some registered metric runs the fitted model of `cls` (a capability metric such as nll or backtracking)."""
    return any(METRICS.get(name).runs_on(cls.capabilities) for name in METRICS.names())


def store_artifacts(store: ResultStore, key: RunKey, split: Split | TaskSet, samples: torch.Tensor,
                    models: list[Method], training_log: dict) -> dict:
    """Write the samples (uint8 .npz), the fitted models (where a metric needs them), the grid and the loss curves;
    return the record's `artifacts` (paths relative to the store, with the sha256 of the files rescoring reads)."""
    n_tasks = len(models)
    arrays = {"samples": (samples * 255).round().to(torch.uint8).numpy()}
    if isinstance(split, TaskSet):  # which task (index into the record's split.tasks) each sample belongs to
        arrays["task"] = np.repeat(np.arange(n_tasks), len(samples) // n_tasks)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(store.samples_path(key), buffer.getvalue())
    artifacts = {
        "samples": str(store.samples_path(key).relative_to(store.root)),
        "samples_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
    }
    if needs_checkpoint(type(models[0])):
        paths = [store.checkpoint_path(key, index if isinstance(split, TaskSet) else None) for index in range(n_tasks)]
        artifacts["checkpoints"] = [{"path": str(path.relative_to(store.root)), "sha256": save_checkpoint(path, model)}
                                    for path, model in zip(paths, models)]
    if isinstance(split, TaskSet):
        save_task_grid(store.grid_path(key), [s.task.support for s in split.splits], samples.chunk(n_tasks))
    else:
        save_grid(store.grid_path(key), split.task.support, samples)
    artifacts["grid"] = str(store.grid_path(key).relative_to(store.root))
    title = f"{key.method} · {key.split_id} · seed {key.seed}"
    if save_loss_curves(store.loss_curves_path(key), training_log, title):
        artifacts["loss_curves"] = str(store.loss_curves_path(key).relative_to(store.root))
    return artifacts


def score(split: Split | TaskSet, samples: torch.Tensor, models: list[Method | None], settings: dict,
          metric_names: list[str] | None, reporter: Reporter, timings: dict[str, float]) -> tuple[dict, list[dict] | None]:
    """Every requested metric of one run's samples: (metrics, None) for a split; for a task set (aggregated metrics,
    per-task metrics), the samples being in task order, an equal number per task. `models` holds the fitted model of
    each task (None where there is none: model metrics are then not applicable). `settings`: `profile_settings(profile)`."""
    names = metric_names if metric_names is not None else in_display_order(METRICS.names())
    seed = split.info.seed
    if isinstance(split, Split):
        ruler = timed_ruler(split.info.dataset, names, reporter, timings)
        start = time.perf_counter()
        outcomes, metric_timings = evaluate(
            samples, reference=split.reference, support=split.task.support, held_out=split.held_out,
            dataset=split.info.dataset, novel_class=split.info.novel_class, model=models[0], metric_names=names,
            seed=derive_seed(seed, "evaluate"), settings=settings, reporter=reporter, ruler=ruler,
        )
        _add_timings(timings, {"evaluate": time.perf_counter() - start})
        _add_timings(timings, metric_timings, "evaluate.")
        return outcomes, None

    n_tasks = len(split.splits)
    pooled = [name for name in names if METRICS.get(name).across_tasks == "pooled"]
    per_task = [name for name in names if name not in pooled]
    # Metrics that need a target class are not applicable per task: they must not make the evaluator load.
    ruler = timed_ruler(split.info.dataset, [name for name in names if "novel_class" not in METRICS.get(name).needs],
                        reporter, timings)
    task_metrics = []
    handle = reporter.task(f"evaluate {n_tasks} tasks", n_tasks)
    try:
        for index, (task, task_samples, model) in enumerate(zip(split.splits, samples.chunk(n_tasks), models)):
            start = time.perf_counter()
            outcomes, metric_timings = evaluate(
                task_samples, reference=task.reference, support=task.task.support, dataset=task.info.dataset,
                novel_class=None, model=model, metric_names=per_task, seed=derive_seed(seed, f"evaluate:{index}"),
                settings=settings, need_reasons={"novel_class": _UNKNOWN_TO_EVALUATOR}, ruler=ruler,
            )
            _add_timings(timings, {"evaluate": time.perf_counter() - start})
            _add_timings(timings, metric_timings, "evaluate.")
            task_metrics.append(outcomes)
            handle.advance()
    finally:
        handle.close()
    start = time.perf_counter()
    pooled_outcomes, metric_timings = evaluate(
        samples, reference=split.reference, support=split.support, dataset=split.info.dataset,
        novel_class=None, metric_names=pooled, seed=derive_seed(seed, "evaluate"), settings=settings, reporter=reporter,
        ruler=ruler,
    )
    _add_timings(timings, {"evaluate": time.perf_counter() - start})
    _add_timings(timings, metric_timings, "evaluate.")
    metrics = {**aggregate_over_tasks(task_metrics, n_tasks), **mark_pooled(pooled_outcomes, n_tasks)}
    return {name: metrics[name] for name in in_display_order(metrics)}, task_metrics


@torch.no_grad()
def latent_groups(method: Method, split: Split) -> list[tuple[str, str, torch.Tensor]]:
    """Embeddings for the latent-space plot: the first images of each base class, the support set, the first queries.

    Deterministic (the first images in the split's order), so a plot is reproduced exactly.
    """
    names = DATASETS.get(split.info.dataset).class_names
    task = split.task
    groups = []
    for label in torch.unique(task.base_labels).tolist():
        images = task.base_images[task.base_labels == label][:LATENT_PLOT_BASE_PER_CLASS]
        groups.append((f"{names[label]} (base)", "base", method.embed(images).float().flatten(1)))
    novel = split.info.novel_class_name
    groups.append((f"{novel} (support)", "support", method.embed(task.support).float().flatten(1)))
    if len(split.reference):
        groups.append((f"{novel} (query)", "query", method.embed(split.reference[:LATENT_PLOT_QUERIES]).float().flatten(1)))
    return groups


def _add_timings(timings: dict[str, float], more: dict[str, float], prefix: str = "") -> None:
    for name, seconds in more.items():
        timings[prefix + name] = timings.get(prefix + name, 0.0) + seconds


def _fitted(cls: type[Method], split: Split, spec: RunSpec, budget, reporter: Reporter, timings: dict[str, float],
            training_log: dict, pretrained: Method | None = None) -> Method:
    """A method fitted to `split`: from scratch, or (transfer methods) by adapting a copy of `pretrained`.

    Its training log goes into `training_log` even when fitting fails (a diverged run keeps its curve).
    """
    start = time.perf_counter()
    if pretrained is not None:
        method = copy.deepcopy(pretrained)
        method.timings, method.training_log = {}, {}
    else:
        method = cls(device=spec.device)
    method.reporter = reporter
    try:
        if pretrained is not None:
            method.adapt(split.task_for(cls), budget, split.info.seed)
        else:
            method.fit(split.task_for(cls), budget, split.info.seed)
    finally:
        training_log.update(method.training_log)
        _add_timings(timings, {"fit": time.perf_counter() - start})
        _add_timings(timings, method.timings, "fit.")
        method.reporter = NullReporter()  # a live progress display is neither copied nor stored
    return method


def _draw(method: Method, n: int, sample_seed: int, image_shape: tuple[int, int, int], timings: dict[str, float]) -> torch.Tensor:
    """`n` checked samples, quantised to 8 bits: scored exactly as stored, so `bench evaluate` on the file reproduces them."""
    start = time.perf_counter()
    with torch.no_grad():
        samples = method.sample(n, torch.Generator().manual_seed(sample_seed)).float().cpu()
    check_samples(samples, n, image_shape)
    samples = (samples * 255).round() / 255
    _add_timings(timings, {"sample": time.perf_counter() - start})
    return samples


# Why class consistency does not apply per task on Omniglot (see `EvalInputs.need_reasons`).
_UNKNOWN_TO_EVALUATOR = "the novel characters are not among the domain evaluator's classes (it is trained on the background characters only)"


def _fit_and_sample(cls: type[Method], split: Split | TaskSet, spec: RunSpec, budget, n_samples: int, reporter: Reporter,
                    timings: dict[str, float], training_log: dict, task_logs: list[dict]) -> tuple[torch.Tensor, list[Method]]:
    """Fit `cls` to a split (one model) or to every task of a task set (one model per task); return the samples
    (a task set's in task order, `n_samples // tasks` each) and the fitted models.

    A transfer method (capability `transfer`) pretrains once on a task set and adapts a copy per
    task, which gives the same result as fitting each task from scratch (see `bench.sdk.method`).
    """
    seed = split.info.seed
    if isinstance(split, Split):
        method = _fitted(cls, split, spec, budget, reporter, timings, training_log)
        return _draw(method, n_samples, derive_seed(seed, "sample"), split.task.image_shape, timings), [method]

    n_tasks = len(split.splits)
    pretrained = None
    if "transfer" in cls.capabilities:
        pretrained = cls(device=spec.device)
        pretrained.reporter = reporter
        start = time.perf_counter()
        pretrained.pretrain(split.splits[0].task_for(cls), budget, seed)
        _add_timings(timings, {"fit": time.perf_counter() - start})
        _add_timings(timings, pretrained.timings, "fit.")
        training_log.update(pretrained.training_log)
        pretrained.reporter = NullReporter()  # copied per task; a live progress display cannot be copied
    all_samples, models = [], []
    handle = reporter.task(f"{cls.__name__} over {n_tasks} tasks", n_tasks)
    try:
        for index, task in enumerate(split.splits):
            task_log: dict = {}
            try:
                method = _fitted(cls, task, spec, budget, NullReporter(), timings, task_log, pretrained)
            except Exception:
                training_log[f"task {index} ({task.info.novel_class_name})"] = task_log
                raise
            task_logs.append(task_log)
            all_samples.append(_draw(method, n_samples // n_tasks, derive_seed(seed, f"sample:{index}"),
                                     task.task.image_shape, timings))
            models.append(method)
            handle.advance()
    finally:
        handle.close()
    return torch.cat(all_samples), models


def timed_ruler(dataset: str, metric_names: list[str], reporter: Reporter | None, timings: dict[str, float]) -> Ruler:
    """`prepare_ruler` as its own timed phase (`evaluator`): loading, or for a folder training, the domain evaluator."""
    start = time.perf_counter()
    ruler = prepare_ruler(dataset, metric_names, reporter)
    timings["evaluator"] = time.perf_counter() - start
    return ruler


def _matches(record: dict, method_name: str, split: Split | TaskSet, spec: RunSpec) -> bool:
    """Whether a stored record was measured as `spec` asks: same data, method version and budget,
    sample count and evaluation settings, and every requested metric at its current version."""
    cls = METHODS.get(method_name)
    stored_metrics = record.get("metrics", {})
    wanted = spec.metrics if spec.metrics is not None else METRICS.names()
    return (
        record["split"]["sha256"] == split.info.sha256
        and record["method"]["version"] == cls.version
        and record["method"]["budget"] == dataclasses.asdict(cls.budget_for(spec.profile))
        and record["evaluation"]["n_samples"] == samples_drawn(split, spec.n_samples or EVAL_SAMPLES[spec.profile])
        and record["evaluation"].get("settings") == profile_settings(spec.profile)
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
        split = make_run_split(spec.dataset, spec.shots, seed, novel_class, spec.characters)
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
