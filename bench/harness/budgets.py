"""Budgets of the scoring computations that optimise or sample, read off a measured curve.

LPIPS backtracking optimises latents for T steps from R restarts; the NLL averages K importance
samples; AIS anneals through T distributions. All three only approach their limit, so a profile's budget is a cost
traded against an error. `bench curve backtrack|nll|ais` measures that error on stored runs' fitted models
(runs stored with a checkpoint, i.e. scored with a model metric):

- backtracking: one optimisation at the long budget (T_max steps, R_max restarts) records the
  distances after each t in `steps`; the best of the first r restarts is a run with r restarts
  (restarts are independent), so one optimisation gives the whole (t, r) grid;
- NLL: the estimate at each K in `samples`, each with the same noise seed;
- AIS: the estimate at each T in `steps` (the profile's chains, leapfrog steps and sigma), each with the
  same noise seed.

The budget chosen is the cheapest point whose value is within `tolerance` of the long budget's on every
run: relative for backtracking and the NLL, in nats per image for AIS (its values, densities on
continuous pixels, can be near or below zero). The curve (values, chosen point, how it was measured) goes to JSON and PNG.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.ticker
import torch

from bench.data.splits import TaskSet
from bench.harness.environment import environment, git_commit, utc_now
from bench.harness.evaluation import prepare_ruler
from bench.harness.plots import save_figure
from bench.harness.rescore import load_models, rebuild_split
from bench.harness.store import ResultStore, RunKey
from bench.sdk.likelihood import observe
from metrics import EvalInputs, profile_settings
from metrics._backtrack import backtrack_trajectory
from metrics.nll_ais import ais_negative_log_likelihood

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file backend

BACKTRACK_STEPS = (25, 50, 100, 150, 200, 300, 400, 600)
BACKTRACK_RESTARTS = 5
NLL_SAMPLES = (10, 30, 100, 300, 1000)
AIS_STEPS = (30, 100, 300, 1000, 3000)
DEFAULT_TOLERANCE = 0.02


class CurveError(RuntimeError):
    """A run cannot be measured (no checkpoint, a task set); the message says why."""


@dataclass(frozen=True)
class RunModel:
    key: RunKey
    inputs: EvalInputs


def _run_model(store: ResultStore, key: RunKey, device: str, overrides: dict) -> RunModel:
    record = store.load(key)
    if record is None:
        raise CurveError(f"no stored run {key.relative}")
    split = rebuild_split(record)
    if isinstance(split, TaskSet):
        raise CurveError(f"{key.relative} is a task set; curves are measured on single-split runs")
    (model,), unavailable = load_models(store, record, 1, device)
    if unavailable:
        raise CurveError(f"{key.relative}: {unavailable}")
    settings = {**profile_settings(key.profile), **overrides}
    ruler = prepare_ruler(split.info.dataset, ["lpips_backtrack"], device=device)
    inputs = EvalInputs(
        samples=split.reference[:0],
        reference=split.reference,
        support=split.task.support,
        held_out=None,
        dataset=split.info.dataset,
        evaluator=ruler.evaluator,
        model=model,
        capabilities=frozenset(getattr(model, "capabilities", ())),
        seed=record["evaluation"]["evaluation_seed"],
        settings=settings,
    )
    return RunModel(key, inputs)


def backtrack_curve(
    run: RunModel, targets: int = 100, steps: tuple[int, ...] = BACKTRACK_STEPS, restarts: int = BACKTRACK_RESTARTS
) -> dict:
    """{"values": {"t,r": mean best distance}, ...} of held-out backtracking on one run, from one optimisation."""
    start = time.perf_counter()
    recorded, perceptual = backtrack_trajectory(
        run.inputs, run.inputs.reference[:targets], max(steps), restarts, record_at=tuple(steps)
    )
    values = {
        f"{t},{r}": float(recorded[t][:r].min(0).values.mean())
        for t in sorted(recorded)
        for r in range(1, restarts + 1)
    }
    return {"values": values, "seconds": time.perf_counter() - start, "distance": perceptual.card["distance"]}


def nll_curve(run: RunModel, images: int = 200, samples: tuple[int, ...] = NLL_SAMPLES) -> dict:
    """{"values": {"K": mean NLL in nats}, ...} on the first `images` reference images, one noise seed for all K."""
    if "log_likelihood" not in run.inputs.capabilities:
        raise CurveError(f"{run.key.method} has no log-likelihood")
    x = observe(run.inputs.reference[:images])
    values, seconds = {}, {}
    for k in samples:
        start = time.perf_counter()
        log_px = run.inputs.model.log_likelihood(x, k, torch.Generator().manual_seed(run.inputs.seed))
        values[str(k)] = float(-torch.as_tensor(log_px).double().mean())
        seconds[str(k)] = time.perf_counter() - start
    return {"values": values, "seconds": seconds}


def ais_curve(run: RunModel, images: int = 20, steps: tuple[int, ...] = AIS_STEPS) -> dict:
    """{"values": {"T": mean AIS NLL in nats}, ...} on the first `images` reference images, one noise seed for all T."""
    if "latent_prior" not in run.inputs.capabilities:
        raise CurveError(f"{run.key.method} declares no latent prior")
    values, seconds = {}, {}
    for t in steps:
        inputs = dataclasses.replace(
            run.inputs, settings={**run.inputs.settings, "ais_steps": t, "ais_max_images": images}
        )
        start = time.perf_counter()
        values[str(t)] = ais_negative_log_likelihood(inputs).value
        seconds[str(t)] = time.perf_counter() - start
    return {"values": values, "seconds": seconds}


def cheapest_within(curves: dict[str, dict], cost, tolerance: float, absolute: bool = False) -> str | None:
    """The cheapest grid point whose value is within `tolerance` (relative, or in the values' units if `absolute`)
    of the most expensive point's, on every run; None if no point but the longest qualifies."""
    points = list(next(iter(curves.values()))["values"])
    longest = max(points, key=cost)
    good = [
        point
        for point in points
        if all(
            abs(curve["values"][point] - curve["values"][longest])
            <= tolerance * (1.0 if absolute else abs(curve["values"][longest]))
            for curve in curves.values()
        )
    ]
    return min(good, key=cost) if good else None


def measure(
    metric: str,
    store: ResultStore,
    keys: list[RunKey],
    out: Path,
    device: str = "cpu",
    tolerance: float = DEFAULT_TOLERANCE,
    grid: tuple[int, ...] | None = None,
    settings: dict | None = None,
) -> dict:
    """Measure `metric`'s curve on each run of `keys`, choose the budget, write `out`.json and `out`.png.

    `grid`: the backtracking steps read (default `BACKTRACK_STEPS`) or the NLL's sample counts (`NLL_SAMPLES`);
    `settings`: metric settings over the profile's (e.g. another `backtrack_lr`)."""
    curves = {}
    for key in keys:
        run = _run_model(store, key, device, settings or {})
        if metric == "backtrack":
            curves[key.method] = backtrack_curve(run, steps=grid or BACKTRACK_STEPS)
        elif metric == "ais":
            curves[key.method] = ais_curve(run, steps=grid or AIS_STEPS)
        else:
            curves[key.method] = nll_curve(run, samples=grid or NLL_SAMPLES)
    if metric == "backtrack":

        def cost(point: str) -> int:
            t, r = point.split(",")
            return int(t) * int(r)
    else:

        def cost(point: str) -> int:
            return int(point)

    absolute = metric == "ais"
    chosen = cheapest_within(curves, cost, tolerance, absolute)
    result = {
        "metric": metric,
        "runs": [key.to_dict() for key in keys],
        "settings": {**profile_settings(keys[0].profile), **(settings or {})},
        "curves": curves,
        "tolerance": tolerance,
        "chosen": chosen,
        "rule": (
            f"the cheapest point within {tolerance:g} nats per image of the longest budget's value on every run"
            if absolute
            else f"the cheapest point within {tolerance:.0%} (relative) of the longest budget's value on every run"
        ),
        "code": git_commit(),
        "environment": environment(device),
        "created_at": utc_now(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = curve_files(out)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    plot_curves(result, png_path)
    return result


def curve_files(out: Path) -> tuple[Path, Path]:
    """OUT.json and OUT.png (appended, not substituted: `curve-lr0.1` must not become `curve-lr0.json`)."""
    return out.parent / f"{out.name}.json", out.parent / f"{out.name}.png"


def plot_curves(result: dict, path: Path) -> None:
    curves = result["curves"]
    figure, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for axis, (method, curve) in zip(axes[0], curves.items()):
        if result["metric"] == "backtrack":
            by_restarts: dict[int, list[tuple[int, float]]] = {}
            for point, value in curve["values"].items():
                t, r = map(int, point.split(","))
                by_restarts.setdefault(r, []).append((t, value))
            for r, line in sorted(by_restarts.items()):
                line.sort()
                axis.plot([t for t, _ in line], [v for _, v in line], marker="o", label=f"R={r}")
            axis.set_xlabel("steps T")
            axis.set_ylabel("mean best distance")
        else:
            ks = sorted(int(k) for k in curve["values"])
            axis.plot(ks, [curve["values"][str(k)] for k in ks], marker="o")
            axis.set_xlabel("importance samples K" if result["metric"] == "nll" else "intermediate distributions T")
            axis.set_ylabel("NLL (nats)")
        axis.set_xscale("log")
        grid = sorted({int(point.split(",")[0]) for point in curve["values"]})
        axis.set_xticks(grid, [str(point) for point in grid], fontsize=7)
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_title(method)
        if result["chosen"]:
            axis.annotate(
                f"chosen: {result['chosen']}", xy=(0.02, 0.04), xycoords="axes fraction", va="bottom", fontsize=8
            )
        if result["metric"] == "backtrack":
            axis.legend(fontsize=7)
    figure.suptitle(f"{result['metric']}: {result['rule']}", fontsize=9)
    save_figure(figure, path, dpi=110)
