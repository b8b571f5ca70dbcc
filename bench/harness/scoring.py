"""Scoring one run's samples: the metrics of a split, or of a task set (per task, then aggregated or pooled).

Shared by `bench run`, `bench rescore` and `bench evaluate`, so that rescoring a stored sample
file with unchanged code reproduces the run's values exactly.
"""

from __future__ import annotations

import time

import torch

from bench.data.splits import Split, TaskSet
from bench.harness.evaluation import (
    Ruler,
    aggregate_over_tasks,
    evaluate,
    mark_pooled,
    prepare_ruler,
)
from bench.harness.plan import derive_seed
from bench.sdk.method import Method
from bench.sdk.progress import Reporter
from metrics import METRICS, in_display_order

# Why class consistency does not apply per task on Omniglot (see `EvalInputs.need_reasons`).
_UNKNOWN_TO_EVALUATOR = "the novel characters are not among the domain evaluator's classes (it is trained on the background characters only)"


def add_timings(timings: dict[str, float], more: dict[str, float], prefix: str = "") -> None:
    """Add `more` into `timings` (summing phases that occur more than once, e.g. per task)."""
    for name, seconds in more.items():
        timings[prefix + name] = timings.get(prefix + name, 0.0) + seconds


def timed_ruler(
    dataset: str, metric_names: list[str], reporter: Reporter | None, timings: dict[str, float], device: str
) -> Ruler:
    """`prepare_ruler` as its own timed phase (`evaluator`): loading, or for a folder training, the domain evaluator."""
    start = time.perf_counter()
    ruler = prepare_ruler(dataset, metric_names, reporter, device=device)
    timings["evaluator"] = time.perf_counter() - start
    return ruler


def _timed_evaluate(timings: dict[str, float], samples: torch.Tensor, **kwargs) -> dict[str, dict]:
    start = time.perf_counter()
    outcomes, metric_timings = evaluate(samples, **kwargs)
    add_timings(timings, {"evaluate": time.perf_counter() - start})
    add_timings(timings, metric_timings, "evaluate.")
    return outcomes


def score(
    split: Split | TaskSet,
    samples: torch.Tensor,
    models: list[Method | None],
    settings: dict,
    metric_names: list[str] | None,
    reporter: Reporter,
    timings: dict[str, float],
    device: str = "cpu",
) -> tuple[dict, list[dict] | None]:
    """Every requested metric of one run's samples: (metrics, None) for a split; for a task set (aggregated metrics,
    per-task metrics), the samples being in task order, an equal number per task. `models` holds the fitted model of
    each task (None where there is none: model metrics are then not applicable). `settings`: the plan's metric settings."""
    names = metric_names if metric_names is not None else in_display_order(METRICS.names())
    if isinstance(split, TaskSet):
        return _score_task_set(split, samples, models, settings, names, reporter, timings, device)
    ruler = timed_ruler(split.info.dataset, names, reporter, timings, device)
    outcomes = _timed_evaluate(
        timings,
        samples,
        reference=split.reference,
        support=split.task.support,
        held_out=split.held_out,
        dataset=split.info.dataset,
        novel_class=split.info.novel_class,
        model=models[0],
        metric_names=names,
        seed=derive_seed(split.info.seed, "evaluate"),
        settings=settings,
        reporter=reporter,
        ruler=ruler,
        device=device,
    )
    return outcomes, None


def _score_task_set(
    split: TaskSet,
    samples: torch.Tensor,
    models: list[Method | None],
    settings: dict,
    names: list[str],
    reporter: Reporter,
    timings: dict[str, float],
    device: str,
) -> tuple[dict, list[dict]]:
    """Per-task metrics averaged over the tasks; distribution metrics (`across_tasks="pooled"`) on all tasks at once."""
    n_tasks, seed = len(split.splits), split.info.seed
    pooled = [name for name in names if METRICS.get(name).across_tasks == "pooled"]
    per_task = [name for name in names if name not in pooled]
    # Metrics that need a target class are not applicable per task: they must not make the evaluator load.
    ruler = timed_ruler(
        split.info.dataset,
        [name for name in names if "novel_class" not in METRICS.get(name).needs],
        reporter,
        timings,
        device,
    )
    task_metrics = []
    handle = reporter.task(f"evaluate {n_tasks} tasks", n_tasks)
    try:
        for index, (task, task_samples, model) in enumerate(zip(split.splits, samples.chunk(n_tasks), models)):
            task_metrics.append(
                _timed_evaluate(
                    timings,
                    task_samples,
                    reference=task.reference,
                    support=task.task.support,
                    dataset=task.info.dataset,
                    novel_class=None,
                    model=model,
                    metric_names=per_task,
                    seed=derive_seed(seed, f"evaluate:{index}"),
                    settings=settings,
                    need_reasons={"novel_class": _UNKNOWN_TO_EVALUATOR},
                    ruler=ruler,
                    device=device,
                )
            )
            handle.advance()
    finally:
        handle.close()
    pooled_outcomes = _timed_evaluate(
        timings,
        samples,
        reference=split.reference,
        support=split.support,
        dataset=split.info.dataset,
        novel_class=None,
        metric_names=pooled,
        seed=derive_seed(seed, "evaluate"),
        settings=settings,
        reporter=reporter,
        ruler=ruler,
        device=device,
    )
    metrics = {**aggregate_over_tasks(task_metrics, n_tasks), **mark_pooled(pooled_outcomes, n_tasks)}
    return {name: metrics[name] for name in in_display_order(metrics)}, task_metrics
