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

from bench.datasets import DATASETS
from bench.environment import environment, git_commit, utc_now
from bench.evaluation import aggregate_over_tasks, evaluate, mark_pooled
from bench.grids import save_grid, save_task_grid
from bench.method import Method, TrainingDiverged
from bench.plots import LATENT_PLOT_BASE_PER_CLASS, LATENT_PLOT_QUERIES, save_latent_projection, save_loss_curves
from bench.progress import NullReporter, Reporter
from bench.splits import DEFAULT_CHARACTERS, Split, TaskSet, make_run_split
from bench.store import RECORD_SCHEMA, ResultStore, RunKey, atomic_write_bytes
from methods import METHODS
from metrics import METRICS, in_display_order

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
    """Fit, sample, evaluate and store one (method, split or task set, seed, profile); return the record."""
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
            "settings": dict(EVAL_SETTINGS[spec.profile]),
        },
        "code": git_commit(),
        "environment": environment(spec.device),
        "created_at": utc_now(),
    }
    started = time.perf_counter()
    training_log: dict = {}
    try:
        if isinstance(split, TaskSet):
            samples, record["metrics"], record["tasks"] = _run_task_set(cls, split, spec, budget, n_samples, reporter,
                                                                       timings, training_log)
            record["evaluation"]["n_samples_per_task"] = n_samples // len(split.splits)
        else:
            method = _fitted(cls, split, spec, budget, reporter, timings, training_log)
            samples = _draw(method, n_samples, derive_seed(seed, "sample"), split.task.image_shape, timings)
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
    if isinstance(split, Split):
        timings["evaluator"] = prepare_evaluator(info.dataset, spec.metrics, reporter)
        eval_start = time.perf_counter()
        record["metrics"], metric_timings = evaluate(
            samples,
            reference=split.reference,
            support=split.task.support,
            held_out=split.held_out,
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
    arrays = {"samples": (samples * 255).round().to(torch.uint8).numpy()}
    if isinstance(split, TaskSet):  # which task (index into the record's split.tasks) each sample belongs to
        arrays["task"] = np.repeat(np.arange(len(split.splits)), n_samples // len(split.splits))
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(store.samples_path(key), buffer.getvalue())
    if isinstance(split, TaskSet):
        save_task_grid(store.grid_path(key), [s.task.support for s in split.splits], samples.chunk(len(split.splits)))
    else:
        save_grid(store.grid_path(key), split.task.support, samples)
    record["artifacts"] = {
        "samples": str(store.samples_path(key).relative_to(store.root)),
        "grid": str(store.grid_path(key).relative_to(store.root)),
    }
    if save_loss_curves(store.loss_curves_path(key), training_log, f"{method_name} · {info.split_id} · seed {seed}"):
        record["artifacts"]["loss_curves"] = str(store.loss_curves_path(key).relative_to(store.root))
    timings["store"] = time.perf_counter() - store_start
    if isinstance(split, Split) and method.has("embed"):
        start = time.perf_counter()
        save_latent_projection(store.latent_plot_path(key), latent_groups(method, split),
                               f"{method_name} latent space (PCA) · {info.split_id} · seed {seed}")
        record["artifacts"]["latent_plot"] = str(store.latent_plot_path(key).relative_to(store.root))
        timings["latent_plot"] = time.perf_counter() - start
    record["timings"] = {**timings, "total": time.perf_counter() - started}
    store.write(record)
    return record


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


def _run_task_set(cls: type[Method], task_set: TaskSet, spec: RunSpec, budget, n_samples: int, reporter: Reporter,
                  timings: dict[str, float], training_log: dict) -> tuple[torch.Tensor, dict, list[dict]]:
    """Fit, sample and evaluate every task of `task_set`; return (samples, aggregated metrics, per-task records).

    A transfer method (capability `transfer`) pretrains once and adapts a copy per task, which
    gives the same result as fitting each task from scratch (see `bench.method`); other methods
    are fitted per task. Each task is evaluated as soon as it is fitted (its fitted model is
    needed by the model metrics and then dropped). Metrics marked `across_tasks="pooled"` are
    computed once at the end on all samples against all references.
    """
    seed, n_tasks = task_set.info.seed, len(task_set.splits)
    per_task_samples = n_samples // n_tasks
    names = spec.metrics if spec.metrics is not None else in_display_order(METRICS.names())
    pooled = [name for name in names if METRICS.get(name).across_tasks == "pooled"]
    per_task = [name for name in names if name not in pooled]
    # Metrics that need a target class are not applicable per task: they must not make the evaluator train.
    timings["evaluator"] = prepare_evaluator(
        task_set.info.dataset, [name for name in names if "novel_class" not in METRICS.get(name).needs], reporter)
    pretrained = None
    if "transfer" in cls.capabilities:
        pretrained = cls(device=spec.device)
        pretrained.reporter = reporter
        start = time.perf_counter()
        pretrained.pretrain(task_set.splits[0].task_for(cls), budget, seed)
        _add_timings(timings, {"fit": time.perf_counter() - start})
        _add_timings(timings, pretrained.timings, "fit.")
        training_log.update(pretrained.training_log)
        pretrained.reporter = NullReporter()  # copied per task; a live progress display cannot be copied

    all_samples, task_records = [], []
    handle = reporter.task(f"{cls.__name__} over {n_tasks} tasks", n_tasks)
    try:
        for index, split in enumerate(task_set.splits):
            task_log: dict = {}
            try:
                method = _fitted(cls, split, spec, budget, NullReporter(), timings, task_log, pretrained)
            except Exception:
                training_log[f"task {index} ({split.info.novel_class_name})"] = task_log
                raise
            samples = _draw(method, per_task_samples, derive_seed(seed, f"sample:{index}"), split.task.image_shape, timings)
            start = time.perf_counter()
            outcomes, metric_timings = evaluate(
                samples, reference=split.reference, support=split.task.support, dataset=split.info.dataset,
                novel_class=None, model=method, metric_names=per_task, seed=derive_seed(seed, f"evaluate:{index}"),
                settings=EVAL_SETTINGS[spec.profile], need_reasons={"novel_class": _UNKNOWN_TO_EVALUATOR},
            )
            _add_timings(timings, {"evaluate": time.perf_counter() - start})
            _add_timings(timings, metric_timings, "evaluate.")
            task_records.append({**task_set.info.tasks[index], "metrics": outcomes, "training_log": task_log})
            all_samples.append(samples)
            handle.advance()
    finally:
        handle.close()

    samples = torch.cat(all_samples)
    start = time.perf_counter()
    pooled_outcomes, metric_timings = evaluate(
        samples, reference=task_set.reference, support=task_set.support, dataset=task_set.info.dataset,
        novel_class=None, metric_names=pooled, seed=derive_seed(seed, "evaluate"), settings=EVAL_SETTINGS[spec.profile],
        reporter=reporter,
    )
    _add_timings(timings, {"evaluate": time.perf_counter() - start})
    _add_timings(timings, metric_timings, "evaluate.")
    metrics = {**aggregate_over_tasks([t["metrics"] for t in task_records], n_tasks), **mark_pooled(pooled_outcomes, n_tasks)}
    return samples, {name: metrics[name] for name in in_display_order(metrics)}, task_records


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
