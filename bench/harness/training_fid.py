"""A sample metric over training: FID at each checkpoint of a method's fit (`bench curve fid`).

The IMLE papers plot FID against training iterations to show that Adaptive IMLE converges in fewer
than IMLE. Here a method that `reports_checkpoints` calls `training_checkpoint(phase, step,
total)` during `fit` (the IMLE family: before the first round and after each); the probe this
module attaches samples `samples` images at every `every`-th step (and the last) and scores them
with the split's ruler, exactly as a run would (`bench.harness.evaluation.evaluate`).

What keeps the measurement out of the training: the probe draws from its own generator, seeded
from the support draw as a run's sampling is (the same noise at every checkpoint, so the curve
shows the model changing, not the noise), runs without gradients and restores every network's
train/eval mode; the method never sees the ruler or the scores. A fit with the probe therefore ends
in the same model as one without (tested).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib
import torch

from bench.data.splits import TaskSet, make_run_split
from bench.harness.environment import environment, git_commit, utc_now
from bench.harness.evaluation import evaluate, prepare_ruler
from bench.harness.plan import derive_seed
from bench.harness.plots import save_figure
from bench.sdk.method import Method
from bench.sdk.progress import NullReporter, Reporter
from methods import METHODS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file backend


class TrainingCurveError(RuntimeError):
    """The curve cannot be measured (a method without checkpoints, a task set); the message says why."""


def _modes(method: Method) -> dict[torch.nn.Module, bool]:
    return {
        module: module.training
        for value in vars(method).values()
        if isinstance(value, torch.nn.Module)
        for module in value.modules()
    }


def fid_over_training(
    method_names: list[str],
    dataset: str,
    shots: int,
    profile: str,
    seed: int,
    every: int,
    samples: int,
    metric: str = "fid",
    device: str = "cpu",
    reporter: Reporter | None = None,
) -> dict:
    """{"curves": {method: {"step": [...], "value": [...], ...}}, ...}: `metric` at every `every`-th checkpoint."""
    if every < 1 or samples < 2:
        raise ValueError(f"--every must be >= 1 and --samples >= 2, got {every} and {samples}")
    split = make_run_split(dataset, shots, seed)
    if isinstance(split, TaskSet):
        raise TrainingCurveError(f"{dataset} is scored per task (a task set); the training curve takes one split")
    classes = [METHODS.get(name) for name in method_names]
    for cls in classes:
        if not cls.reports_checkpoints:
            valid = ", ".join(name for name in METHODS.names() if METHODS.get(name).reports_checkpoints)
            raise TrainingCurveError(f"{cls.__name__} reports no training checkpoints (methods that do: {valid})")
    ruler = prepare_ruler(split.info.dataset, [metric], device=device)
    reporter = reporter or NullReporter()
    sample_seed = derive_seed(seed, "sample")
    curves = {}
    for name, cls in zip(method_names, classes):
        curve = {"phase": [], "step": [], "value": [], "seconds": []}

        def probe(method: Method, phase: str, step: int, total: int, curve=curve, name=name) -> None:
            if step % every and step != total:
                return
            start = time.perf_counter()
            modes = _modes(method)
            try:
                with torch.no_grad():
                    images = method.sample(samples, torch.Generator().manual_seed(sample_seed))
            finally:
                for module, training in modes.items():
                    module.train(training)
            outcomes, _ = evaluate(
                images,
                reference=split.reference,
                dataset=split.info.dataset,
                metric_names=[metric],
                seed=derive_seed(seed, "evaluate"),
                ruler=ruler,
                device=device,
            )
            outcome = outcomes[metric]
            if outcome["status"] != "ok":
                raise TrainingCurveError(f"{metric} at {name} {phase} step {step}: {outcome.get('reason') or outcome}")
            for key, value in (("phase", phase), ("step", step), ("value", outcome["value"])):
                curve[key].append(value)
            curve["seconds"].append(time.perf_counter() - start)
            curve["card"] = outcome["card"]

        method = cls(device=device)
        method.reporter = reporter
        method.training_probe = probe
        start = time.perf_counter()
        method.fit(split.task, cls.budget_for(profile), seed)
        curve["fit_seconds_with_probes"] = time.perf_counter() - start
        curves[name] = curve
    return {
        "metric": metric,
        "split": split.info.split_id,
        "dataset": dataset,
        "profile": profile,
        "seed": seed,
        "every": every,
        "samples": samples,
        "reference_images": int(split.reference.shape[0]),
        "curves": curves,
        "code": git_commit(),
        "environment": environment(device),
        "created_at": utc_now(),
    }


def write_fid_curve(result: dict, out: Path) -> tuple[Path, Path]:
    """OUT.json and OUT.png: the metric against the checkpoint step, one line per method."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out.parent / f"{out.name}.json", out.parent / f"{out.name}.png"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    for method, curve in result["curves"].items():
        axis.plot(curve["step"], curve["value"], marker="o", markersize=3, label=method)
    axis.set_xlabel(f"{next(iter(result['curves'].values()))['phase'][0]} step (checkpoint)")
    axis.set_ylabel(result["metric"])
    axis.set_yscale("log")
    axis.legend(fontsize=8)
    axis.set_title(
        # Two lines: a folder split's id alone is wider than the axes.
        f"{result['metric']} of {result['samples']:,} samples over training\n"
        f"{result['split']} · {result['profile']}, seed {result['seed']}",
        fontsize=8,
    )
    save_figure(figure, png_path, dpi=110)
    return json_path, png_path
