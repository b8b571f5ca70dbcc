"""The sweep: for each planned run, fit, sample, store the artefacts, score, write the record.

Everything a run did is timed per phase (`split`, the method's own `fit` phases, `sample`,
`store` per artefact, `evaluator`, `evaluate` per metric) and written into its record. A run
that fails (a diverged loss, an exception in the method, invalid samples) is recorded as failed
with its reason and the sweep goes on; an interrupted run (Ctrl-C, kill) writes no record.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import traceback
from dataclasses import dataclass

import torch

from bench.data.splits import Split
from bench.harness.artifacts import ARTIFACT_WRITERS, FittedRun, write_artifacts
from bench.harness.environment import environment, git_commit, utc_now
from bench.harness.plan import RunPlan, record_config_hash
from bench.harness.pretraining import Pretrained, PretrainingCache, base_only, pretraining_key
from bench.harness.scoring import add_timings, score
from bench.harness.store import RECORD_SCHEMA, ResultStore, RunKey
from bench.sdk.method import Method, TrainingDiverged
from bench.sdk.progress import NullReporter, Reporter


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


def new_record(plan: RunPlan) -> dict:
    """The record's header: what is run, on which data, how it will be evaluated, by which code, where."""
    cls = plan.method_class
    record = {
        "schema": RECORD_SCHEMA,
        "key": plan.key.to_dict(),
        "status": "ok",
        "method": {
            "name": plan.method,
            "title": cls.title,
            "version": cls.version,
            "reference": cls.reference,
            "is_reference": cls.is_reference,
            "capabilities": sorted(cls.capabilities),
            "config": dataclasses.asdict(cls.Config()),
            "budget": dataclasses.asdict(plan.budget),
        },
        "split": plan.split.info.to_dict(),
        "evaluation": {
            "n_samples": plan.n_samples,
            "sample_seed": plan.sample_seed(),
            "evaluation_seed": plan.evaluation_seed(),
            "settings": dict(plan.settings),
            "device": plan.eval_device,
        },
        "code": git_commit(),
        "environment": environment(plan.device),
        "created_at": utc_now(),
    }
    if plan.is_task_set:
        record["evaluation"]["n_samples_per_task"] = plan.samples_per_task
    return record


def run_one(plan: RunPlan, store: ResultStore, reporter: Reporter) -> dict:
    """Fit, sample, store the artefacts of, and score one planned run; write and return its record.

    Generate, then score: the samples (and, for methods that model metrics run, the fitted models)
    are stored before any metric runs, so `bench rescore` can score them again without training.
    """
    record = new_record(plan)
    timings: dict[str, float] = {"split": plan.split_seconds}
    started = time.perf_counter()
    training_log: dict = {}
    task_logs: list[dict] = []
    pretraining: dict = {}
    try:
        samples, models = fit_and_sample(plan, reporter, timings, training_log, task_logs, pretraining)
    except Exception as exc:  # a failed run is data: recorded with its reason, the sweep goes on
        record["status"] = "failed"
        failed_task = getattr(exc, "failed_task", None)
        record["failure"] = {
            "type": type(exc).__name__,
            "reason": f"{failed_task}: {exc}" if failed_task else str(exc),
            "diverged": isinstance(exc, TrainingDiverged),
            "traceback": traceback.format_exc(limit=6),
        }
        record["training_log"] = training_log
        record["pretraining"] = pretraining
        record["timings"] = {**timings, "total": time.perf_counter() - started}
        store.write(record)
        return record
    record["training_log"] = training_log
    if pretraining:
        record["pretraining"] = pretraining
    fitted = FittedRun(plan.key, plan.tasks, plan.is_task_set, store, samples, models, training_log)
    record["artifacts"] = write_artifacts(fitted, ARTIFACT_WRITERS, timings)
    record["metrics"], task_metrics = score(
        plan.split, samples, models, plan.settings, plan.metrics, reporter, timings, plan.eval_device
    )
    if task_metrics is not None:
        record["tasks"] = [
            {**task, "metrics": outcomes, "training_log": log}
            for task, outcomes, log in zip(plan.split.info.tasks, task_metrics, task_logs)
        ]
    record["timings"] = {**timings, "total": time.perf_counter() - started}
    store.write(record)
    return record


def _fitted(
    plan: RunPlan,
    task: Split,
    reporter: Reporter,
    timings: dict[str, float],
    training_log: dict,
    pretrained: Method | None = None,
) -> Method:
    """The method fitted to `task`: from scratch, or (transfer methods) by adapting a copy of `pretrained`
    (which `adapt` continues exactly where `pretrain` left off: the same result as `fit`).

    Its training log goes into `training_log` even when fitting fails (a diverged run keeps its curve).
    """
    cls = plan.method_class
    start = time.perf_counter()
    if pretrained is not None:
        method = copy.deepcopy(pretrained)
        method.timings, method.training_log = {}, {}
    else:
        method = cls(device=plan.device)
    method.reporter = reporter
    try:
        if pretrained is not None:
            method.adapt(task.task_for(cls), plan.budget, plan.train_seed)
        else:
            method.fit(task.task_for(cls), plan.budget, plan.train_seed)
    finally:
        training_log.update(method.training_log)
        add_timings(timings, {"fit": time.perf_counter() - start})
        add_timings(timings, method.timings, "fit.")
        method.reporter = NullReporter()  # a live progress display is neither copied nor stored
    return method


def pretrained_for(plan: RunPlan, reporter: Reporter, cache: PretrainingCache | None = None) -> Pretrained:
    """The plan's method pretrained on its base set at its training seed: from the cache, or pretrained and cached.

    Pretraining is given `base_only(task)`, the task without its support set (`bench.harness.pretraining`)."""
    cls = plan.method_class
    task = base_only(plan.tasks[0].task_for(cls))
    key, content = pretraining_key(plan.method, cls, plan.budget, task, plan.train_seed, plan.device)

    def pretrain() -> Method:
        method = cls(device=plan.device)
        method.reporter = reporter
        try:
            method.pretrain(task, plan.budget, plan.train_seed)
        finally:
            method.reporter = NullReporter()  # copied per task and pickled; a live progress display can be neither
        return method

    return (cache or PretrainingCache()).get_or_pretrain(plan.method, key, content, plan.device, pretrain)


def _pretrained_once(
    plan: RunPlan, reporter: Reporter, timings: dict[str, float], training_log: dict, pretraining: dict
) -> Method:
    """A transfer method pretrained once per base set and training seed (cached across runs), to be adapted per task."""
    result = pretrained_for(plan, reporter)
    if result.reused:
        add_timings(timings, {"pretraining.load": result.seconds})
    else:
        add_timings(timings, {"fit": result.seconds})
        add_timings(timings, result.method.timings, "fit.")
    result.method.timings = {}
    training_log.update(result.method.training_log)
    pretraining.update(result.record())
    return result.method


def _draw(
    method: Method, n: int, sample_seed: int, image_shape: tuple[int, int, int], timings: dict[str, float]
) -> torch.Tensor:
    """`n` checked samples, quantised to 8 bits: scored exactly as stored, so `bench evaluate` on the file reproduces them."""
    start = time.perf_counter()
    with torch.no_grad():
        samples = method.sample(n, torch.Generator().manual_seed(sample_seed)).float().cpu()
    check_samples(samples, n, image_shape)
    samples = (samples * 255).round() / 255
    add_timings(timings, {"sample": time.perf_counter() - start})
    return samples


def fit_and_sample(
    plan: RunPlan,
    reporter: Reporter,
    timings: dict[str, float],
    training_log: dict,
    task_logs: list[dict],
    pretraining: dict | None = None,
) -> tuple[torch.Tensor, list[Method]]:
    """Fit the method to each of the plan's tasks (one model each); return the samples (in task order,
    `plan.samples_per_task` each) and the fitted models.

    A transfer method (capability `transfer`) pretrains once per base set and training seed (or reuses
    the cached pretraining: its key and whether it was reused go into `pretraining`) and adapts a copy
    per task, which gives the same result as fitting each task from scratch (see `bench.sdk.method`);
    each task's training log goes into `task_logs`, the shared pretraining's into `training_log`.
    """
    pretrained = None
    if "transfer" in plan.method_class.capabilities:
        pretrained = _pretrained_once(plan, reporter, timings, training_log, {} if pretraining is None else pretraining)
    all_samples, models = [], []
    handle = (
        reporter.task(f"{plan.method_class.__name__} over {len(plan.tasks)} tasks", len(plan.tasks))
        if plan.is_task_set
        else None
    )
    try:
        for index, task in enumerate(plan.tasks):
            task_log = {} if plan.is_task_set else training_log
            try:
                method = _fitted(
                    plan, task, NullReporter() if plan.is_task_set else reporter, timings, task_log, pretrained
                )
            except Exception as exc:
                if plan.is_task_set:
                    name = f"task {index} ({task.info.novel_class_name})"
                    training_log[name] = task_log
                    exc.failed_task = f"{name}, {index + 1} of {len(plan.tasks)}"  # the record's failure names it
                raise
            if plan.is_task_set:
                task_logs.append(task_log)
                handle.advance()
            all_samples.append(
                _draw(method, plan.samples_per_task, plan.sample_seed(index), task.task.image_shape, timings)
            )
            models.append(method)
    finally:
        if handle is not None:
            handle.close()
    return torch.cat(all_samples), models


def is_current(record: dict, plan: RunPlan) -> bool:
    """Whether a stored record measured what `plan` asks: same data, method version and budget, sample count and
    metric settings, and every requested metric at its current version (`RunPlan.config_hash`)."""
    return record_config_hash(record, plan.metric_names) == plan.config_hash
