"""Scoring a set of samples with every requested metric.

Each metric's outcome is one of: `ok` (with its value), `not_applicable` (with the unmet need),
`unavailable` (an optional part such as a model file is absent on this machine, with the reason)
or `error` (with the exception text). One failing metric never stops the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from bench.data.datasets import DATASETS
from bench.features.evaluator import DomainEvaluator, NoDomainEvaluator, load_domain_evaluator
from bench.features.extraction import FeatureBank
from bench.sdk.progress import NullReporter, Reporter
from metrics import METRICS, EvalInputs, MissingOptionalPart, in_display_order


@dataclass(frozen=True)
class Ruler:
    """The feature space an evaluation scores in, and the domain evaluator when it was loaded.

    `reason` says why there is no evaluator where that is expected (the metrics that need it are not applicable);
    `error` says why loading it failed (those metrics record it as their error: a missing or altered weights file
    must never pass as "not applicable").
    """

    space: str = "domain"
    evaluator: DomainEvaluator | None = None
    reason: str | None = None
    error: str | None = None


def prepare_ruler(
    dataset: str | None, metric_names: list[str] | None = None, reporter: Reporter | None = None, device: str = "cpu"
) -> Ruler:
    """The dataset's feature space, with its domain evaluator loaded if any of `metric_names` (default: all) reads it."""
    if dataset is None:
        return Ruler(reason="no dataset was named (the domain evaluator is chosen by the dataset)")
    space = DATASETS.get(dataset).feature_extractor
    names = metric_names if metric_names is not None else METRICS.names()
    if not any(METRICS.get(name).uses_evaluator(space) for name in names):
        return Ruler(space=space, reason="no requested metric reads the domain evaluator")
    try:
        return Ruler(space=space, evaluator=load_domain_evaluator(dataset, reporter=reporter, device=device))
    except NoDomainEvaluator as exc:
        return Ruler(space=space, reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded as the error of every metric that needs the evaluator
        return Ruler(space=space, error=f"{type(exc).__name__}: {exc}")


def evaluate(
    samples: torch.Tensor,
    *,
    reference: torch.Tensor | None,
    support: torch.Tensor | None = None,
    held_out: torch.Tensor | None = None,
    dataset: str | None = None,
    novel_class: int | None = None,
    model: Any = None,
    metric_names: list[str] | None = None,
    seed: int = 0,
    settings: dict | None = None,
    reporter: Reporter | None = None,
    need_reasons: dict[str, str] | None = None,
    ruler: Ruler | None = None,
    device: str = "cpu",
) -> tuple[dict[str, dict], dict[str, float]]:
    """Return ({metric: outcome}, {metric: seconds}) for `samples` against `reference` and `support`.

    `settings` is handed to every metric as `EvalInputs.settings` (e.g. the number of importance
    samples of `nll`); each metric records the settings it used in its card. `need_reasons` says
    why an input is absent when the generic message would mislead (see `EvalInputs`). `ruler`: the feature space and
    domain evaluator (default: `prepare_ruler(dataset, metric_names)`). `device`: where the feature pass and the
    domain evaluator run (the model metrics run where the model is).
    """
    names = metric_names if metric_names is not None else in_display_order(METRICS.names())
    ruler = ruler if ruler is not None else prepare_ruler(dataset, names, device=device)
    need_reasons = dict(need_reasons or {})
    if dataset is not None and DATASETS.get(dataset).evaluator_dataset is not None:
        # Measured by another dataset's evaluator (a folder made from it): its classes are that dataset's.
        novel_class = DATASETS.get(dataset).evaluator_class
        need_reasons.setdefault("novel_class", "the folder's card names no class of its evaluator's dataset")
    if ruler.reason or ruler.error:
        need_reasons.setdefault("evaluator", ruler.reason or ruler.error)
    inputs = EvalInputs(
        samples=samples,
        reference=reference,
        support=support,
        held_out=held_out,
        dataset=dataset,
        evaluator=ruler.evaluator,
        feature_space=ruler.space,
        novel_class=novel_class,
        model=model,
        capabilities=frozenset(getattr(model, "capabilities", ())),
        seed=seed,
        settings=dict(settings or {}),
        features=FeatureBank(
            {"samples": samples, "reference": reference, "support": support},
            evaluator=ruler.evaluator,
            device=device,
        ),
        need_reasons=need_reasons,
    )
    # Measurement facts every card carries; metrics add their own (implementation, features, ...).
    measured = {
        "n_samples": int(samples.shape[0]),
        "n_reference": None if reference is None else int(reference.shape[0]),
        "n_support": None if support is None else int(support.shape[0]),
        "image_shape": list(samples.shape[1:]),
    }
    outcomes: dict[str, dict] = {}
    timings: dict[str, float] = {}
    handle = (reporter or NullReporter()).task("evaluate", len(names))
    try:
        for name in names:
            start = time.perf_counter()
            outcomes[name] = _outcome(METRICS.get(name), inputs, measured, ruler)
            timings[name] = time.perf_counter() - start
            handle.advance()
    finally:
        handle.close()
    return outcomes, timings


def _outcome(metric, inputs: EvalInputs, measured: dict, ruler: Ruler) -> dict:
    """One metric's outcome: ok, not applicable (an unmet need), unavailable (an optional part), or error."""
    missing = metric.missing_needs(inputs)
    if missing and set(missing) == {ruler.error}:  # only the evaluator is missing, and it failed to load
        return {"status": "error", "error": ruler.error, "card": metric.card(**measured)}
    if missing:
        missing = [reason for reason in missing if reason != ruler.error] or missing
        return {"status": "not_applicable", "reason": "; ".join(missing), "card": metric.card(**measured)}
    try:
        result = metric.compute(inputs)
    except MissingOptionalPart as exc:
        return {"status": "unavailable", "reason": str(exc), "card": metric.card(**measured)}
    except Exception as exc:  # recorded, not raised: one broken metric must not sink a sweep
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}", "card": metric.card(**measured)}
    return {"status": "ok", "value": result.value, **result.details, "card": metric.card(**measured, **result.card)}


def aggregate_over_tasks(per_task: list[dict[str, dict]], n_tasks: int) -> dict[str, dict]:
    """One outcome per metric from the per-task outcomes of a task set: the mean over the tasks.

    A metric is `ok` only if it is `ok` on every task (its value is then the mean, with the
    standard deviation over tasks); otherwise it takes the first task's failure, prefixed with
    how many tasks failed, so a partial mean is never reported.
    """
    aggregated: dict[str, dict] = {}
    for name in per_task[0]:
        outcomes = [task[name] for task in per_task]
        failed = [o for o in outcomes if o["status"] != "ok"]
        card = {
            **outcomes[0]["card"],
            "aggregation": f"mean over {n_tasks} tasks (per-task values in the record's tasks)",
        }
        if failed:
            first = failed[0]
            text_key = "error" if first["status"] == "error" else "reason"
            aggregated[name] = {
                "status": first["status"],
                text_key: f"{len(failed)} of {n_tasks} tasks: {first.get(text_key, '')}",
                "card": card,
            }
            continue
        values = torch.tensor([o["value"] for o in outcomes], dtype=torch.float64)
        outcome = {
            "status": "ok",
            "value": float(values.mean()),
            "std_over_tasks": float(values.std(unbiased=False)),
            "n_tasks": n_tasks,
            "card": card,
        }
        flags = sorted({o["flag"] for o in outcomes if o.get("flag")})
        if flags:
            outcome["flag"] = "; ".join(flags)
        aggregated[name] = outcome
    return aggregated


def mark_pooled(outcomes: dict[str, dict], n_tasks: int) -> dict[str, dict]:
    """Say on each pooled outcome (card and flag) that it mixes the tasks' samples and references."""
    note = f"pooled over {n_tasks} tasks: all samples against all references, so it measures the union of the tasks"
    marked = {}
    for name, outcome in outcomes.items():
        outcome = {**outcome, "card": {**outcome["card"], "aggregation": note}}
        if outcome["status"] == "ok":
            outcome["flag"] = "; ".join(filter(None, [outcome.get("flag"), note]))
        marked[name] = outcome
    return marked
