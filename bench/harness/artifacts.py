"""What a run leaves beside its record: each artefact is one writer, and a plan lists the writers it runs.

A writer takes the fitted run (`FittedRun`) and returns the entries it adds to the record's
`artifacts` (paths relative to the results directory, and the sha256 of the files that rescoring
reads); it returns {} when it does not apply (no checkpoint for methods no model metric runs, no
latent plot for methods without an encoder). Writers run in the order listed, each timed as
`store.<name>` in the record. A new artefact is a new writer added to `ARTIFACT_WRITERS`.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.data.datasets import DATASETS
from bench.data.splits import Split
from bench.harness.checkpoints import save_checkpoint
from bench.harness.grids import save_grid, save_task_grid
from bench.harness.plots import (
    LATENT_PLOT_BASE_PER_CLASS,
    LATENT_PLOT_QUERIES,
    save_latent_projection,
    save_loss_curves,
)
from bench.harness.store import ResultStore, RunKey
from bench.sdk.files import atomic_write_bytes
from bench.sdk.method import Method
from metrics import METRICS


@dataclass(frozen=True)
class FittedRun:
    """A run after fitting and sampling, before scoring: what the artefact writers read."""

    key: RunKey
    tasks: list[Split]  # one per fitted model (a single split is one task)
    is_task_set: bool
    store: ResultStore
    samples: torch.Tensor  # in [0, 1], already quantised to 8 bits; a task set's in task order
    models: list[Method]
    training_log: dict

    def relative(self, path) -> str:
        return str(path.relative_to(self.store.root))


def write_samples(run: FittedRun) -> dict:
    """The samples as uint8 .npz (with each sample's task index for a task set), and the file's sha256."""
    arrays = {"samples": (run.samples * 255).round().to(torch.uint8).numpy()}
    if run.is_task_set:  # which task (index into the record's split.tasks) each sample belongs to
        arrays["task"] = np.repeat(np.arange(len(run.tasks)), len(run.samples) // len(run.tasks))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = run.store.samples_path(run.key)
    atomic_write_bytes(path, buffer.getvalue())
    return {"samples": run.relative(path), "samples_sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}


def needs_checkpoint(method_class: type[Method]) -> bool:
    """Whether some registered metric runs the fitted model of `method_class` (e.g. nll, backtracking)."""
    return any(METRICS.get(name).runs_on(method_class.capabilities) for name in METRICS.names())


def write_checkpoints(run: FittedRun) -> dict:
    """The fitted models, for the metrics that run them, each with its sha256 (rescoring loads only that file)."""
    if not needs_checkpoint(type(run.models[0])):
        return {}
    paths = [run.store.checkpoint_path(run.key, index if run.is_task_set else None) for index in range(len(run.models))]
    return {
        "checkpoints": [
            {"path": run.relative(path), "sha256": save_checkpoint(path, model)}
            for path, model in zip(paths, run.models)
        ]
    }


def write_grid(run: FittedRun) -> dict:
    """Support images beside samples: one grid, or one row per task."""
    path = run.store.grid_path(run.key)
    if run.is_task_set:
        save_task_grid(path, [task.task.support for task in run.tasks], run.samples.chunk(len(run.tasks)))
    else:
        save_grid(path, run.tasks[0].task.support, run.samples)
    return {"grid": run.relative(path)}


def write_loss_curves(run: FittedRun) -> dict:
    path = run.store.loss_curves_path(run.key)
    title = f"{run.key.method} · {run.key.split_id} · seed {run.key.seed}"
    return {"loss_curves": run.relative(path)} if save_loss_curves(path, run.training_log, title) else {}


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
        groups.append(
            (f"{novel} (query)", "query", method.embed(split.reference[:LATENT_PLOT_QUERIES]).float().flatten(1))
        )
    return groups


def write_latent_plot(run: FittedRun) -> dict:
    """A PCA of the encoder's latent space (base classes, support, queries), for methods that embed one split."""
    if run.is_task_set or not run.models[0].has("embed"):
        return {}
    path = run.store.latent_plot_path(run.key)
    save_latent_projection(
        path,
        latent_groups(run.models[0], run.tasks[0]),
        f"{run.key.method} latent space (PCA) · {run.key.split_id} · seed {run.key.seed}",
    )
    return {"latent_plot": run.relative(path)}


ArtifactWriter = Callable[[FittedRun], dict]
ARTIFACT_WRITERS: tuple[ArtifactWriter, ...] = (
    write_samples,
    write_checkpoints,
    write_grid,
    write_loss_curves,
    write_latent_plot,
)


def write_artifacts(run: FittedRun, writers: tuple[ArtifactWriter, ...], timings: dict[str, float]) -> dict:
    """Run each writer in order; return the merged `artifacts` entries. Times each as `store.<name>`, all as `store`."""
    artifacts: dict = {}
    total = time.perf_counter()
    for writer in writers:
        start = time.perf_counter()
        artifacts.update(writer(run))
        timings[f"store.{writer.__name__.removeprefix('write_')}"] = time.perf_counter() - start
    timings["store"] = time.perf_counter() - total
    return artifacts
