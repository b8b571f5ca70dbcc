"""Scoring a set of samples with every requested metric.

Each metric's outcome is one of: `ok` (with its value), `not_applicable` (with the unmet need)
or `error` (with the exception text). One failing metric never stops the others.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from bench.progress import NullReporter, Reporter
from metrics import METRICS, EvalInputs, in_display_order


def evaluate(
    samples: torch.Tensor,
    *,
    reference: torch.Tensor | None,
    support: torch.Tensor | None = None,
    dataset: str | None = None,
    novel_class: int | None = None,
    model: Any = None,
    metric_names: list[str] | None = None,
    seed: int = 0,
    settings: dict | None = None,
    reporter: Reporter | None = None,
) -> tuple[dict[str, dict], dict[str, float]]:
    """Return ({metric: outcome}, {metric: seconds}) for `samples` against `reference` and `support`.

    `settings` is handed to every metric as `EvalInputs.settings` (e.g. the number of importance
    samples of `nll`); each metric records the settings it used in its card.
    """
    names = metric_names if metric_names is not None else in_display_order(METRICS.names())
    inputs = EvalInputs(
        samples=samples,
        reference=reference,
        support=support,
        dataset=dataset,
        novel_class=novel_class,
        model=model,
        capabilities=frozenset(getattr(model, "capabilities", ())),
        seed=seed,
        settings=dict(settings or {}),
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
            metric = METRICS.get(name)
            start = time.perf_counter()
            missing = metric.missing_needs(inputs)
            if missing:
                outcomes[name] = {"status": "not_applicable", "reason": "; ".join(missing), "card": metric.card(**measured)}
            else:
                try:
                    result = metric.compute(inputs)
                    outcomes[name] = {"status": "ok", "value": result.value, **result.details, "card": metric.card(**measured, **result.card)}
                except Exception as exc:  # recorded, not raised: one broken metric must not sink a sweep
                    outcomes[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "card": metric.card(**measured)}
            timings[name] = time.perf_counter() - start
            handle.advance()
    finally:
        handle.close()
    return outcomes, timings
