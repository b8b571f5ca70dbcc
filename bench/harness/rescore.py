"""`bench rescore`: score stored runs again with the current evaluator and metric code, without training.

A run's samples (uint8 `.npz`) and, where a metric runs the fitted model, its checkpoints are
stored with the run (see `bench.harness.artifacts`). Rescoring rebuilds the run's split
from its record (refusing if the split's content hash changed), loads the samples, and calls
the same `bench.harness.scoring.score` as the run did, with the profile's current evaluation settings:
with unchanged code and evaluator every value is reproduced exactly. A metric that needs the
fitted model keeps its old outcome when the checkpoint is missing or does not match its digest,
and the outcome says why (`kept`). The record is rewritten atomically, with a `rescored` entry
(when, by which code, which metrics, what was kept). The record's `evaluation.settings` take the current values of
the rescored metrics' settings only: the other values were measured with the settings they keep.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch

from bench.data.datasets import DATASETS
from bench.data.datasets.folder import PREFIX as FOLDER_PREFIX
from bench.data.splits import Split, TaskSet, make_run_split
from bench.harness.checkpoints import CheckpointError, load_checkpoint
from bench.harness.environment import git_commit, thread_count, utc_now
from bench.harness.samples import SampleFileError, load_samples
from bench.harness.scoring import score
from bench.harness.store import ResultStore, RunKey
from bench.sdk.progress import NullReporter, Reporter
from bench.sdk.registry import UnknownNameError
from metrics import METRICS, in_display_order, profile_settings


class RescoreError(RuntimeError):
    """A stored run cannot be rescored (no samples, a changed split); the message says why."""


@dataclass
class RescoreOutcome:
    key: RunKey
    status: str  # rescored | skipped | failed
    reason: str = ""
    kept: dict[str, str] = field(default_factory=dict)  # metric -> why its old outcome was kept
    changed: list[str] = field(default_factory=list)  # metrics whose outcome changed or was added


def rebuild_split(record: dict) -> Split | TaskSet:
    info = record["split"]
    characters = len(info.get("tasks", ())) or 1
    split = make_run_split(_dataset_spec(record), info["shots"], info["seed"], info.get("novel_class"), characters)
    if split.info.sha256 != info["sha256"]:
        raise RescoreError(
            f"the split {info['split_id']} (seed {info['seed']}) no longer has the content the run was "
            "scored on (its sha256 changed): re-run it instead"
        )
    return split


def _dataset_spec(record: dict) -> str:
    """What `DATASETS.get` takes for the record's dataset: its registered name, or for a folder split (a `folder-...`
    name, registered only once a `folder:PATH@SIZE` spec is read) that spec, from the folder and image size the record
    holds."""
    info = record["split"]
    name = info["dataset"]
    try:
        DATASETS.get(name)
        return name
    except UnknownNameError:
        if not name.startswith("folder-"):
            raise
    folders = {entry.get("path") for entry in info.get("data_provenance", {}).values()}
    shapes = {
        tuple(m["card"]["image_shape"])
        for m in record.get("metrics", {}).values()
        if "image_shape" in m.get("card", {})
    }
    if len(folders) != 1 or None in folders or len(shapes) != 1:
        raise RescoreError(f"the record of {info['split_id']} names no single folder and image size to rebuild it from")
    folder = folders.pop()
    spec = f"{FOLDER_PREFIX}{folder}@{shapes.pop()[-1]}"
    try:
        dataset = DATASETS.get(spec)
    except (OSError, ValueError) as exc:
        raise RescoreError(
            f"{info['split_id']} was made from the folder {folder}, which cannot be read here: {exc}"
        ) from exc
    if dataset.name != name:
        raise RescoreError(
            f"the folder {folder} now makes the dataset {dataset.name}, not the run's {name}: its card or images changed"
        )
    return spec


def _load_samples(store: ResultStore, record: dict, split: Split | TaskSet) -> torch.Tensor:
    artifacts = record.get("artifacts", {})
    if "samples" not in artifacts:
        raise RescoreError("the record names no sample file (written before samples were kept): re-run it")
    path = store.root / artifacts["samples"]
    if not path.is_file():
        raise RescoreError(f"its samples {path} are missing")
    expected = artifacts.get("samples_sha256")
    if expected and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise RescoreError(f"its samples {path} are not the file the run wrote (sha256 differs from the record's)")
    try:
        return load_samples(path, _image_shape(split), key="samples")
    except SampleFileError as exc:
        raise RescoreError(str(exc)) from exc


def _image_shape(split: Split | TaskSet) -> tuple[int, int, int]:
    return (split.splits[0] if isinstance(split, TaskSet) else split).task.image_shape


def load_models(store: ResultStore, record: dict, n_tasks: int, device: str) -> tuple[list, str | None]:
    """The fitted model per task, or Nones and the reason they are unavailable."""
    entries = record.get("artifacts", {}).get("checkpoints")
    if not entries:
        return [None] * n_tasks, "the run stored no checkpoint of its fitted model"
    try:
        return [load_checkpoint(store.root / entry["path"], entry["sha256"], device) for entry in entries], None
    except CheckpointError as exc:
        return [None] * n_tasks, str(exc)


def _same(old: dict | None, new: dict) -> bool:
    if old is None:
        return False
    keys = ("status", "value")
    return all(old.get(k) == new.get(k) for k in keys) and old.get("card") == new.get("card")


def _score_at_run_threads(record, split, samples, models, names, reporter, timings, device) -> tuple[dict, list | None]:
    """`score` at the run's thread count (`thread_count`: torch, and numpy's BLAS), on `device`.

    Float reductions (feature extraction, KID's kernel sums in numpy) depend on it, and only at the same count are
    values reproduced bit for bit (measured: a run made at 1 thread and rescored at 2 moved KID by 3e-9 relative; with
    this limit it reproduced exactly). A limit can only lower the count a process started with: a process started at
    1 thread (OMP_NUM_THREADS=1) cannot reproduce a 2-thread run's KID to the last bit.
    """
    run_threads = int(record.get("environment", {}).get("torch_threads") or torch.get_num_threads())
    with thread_count(run_threads):
        settings = profile_settings(record["key"]["profile"])
        return score(split, samples, models, settings, names, reporter or NullReporter(), timings, device)


def _merged(record: dict, metrics: dict, task_metrics: list | None, kept: dict[str, str]) -> dict:
    """The record with the new outcomes; a kept (not rescored) outcome stays, marked with why."""
    old = record.get("metrics", {})
    merged = {**old, **metrics}
    for name, reason in kept.items():
        if name in old:
            merged[name] = {**old[name], "kept": reason}
    updated = {**record, "metrics": {name: merged[name] for name in in_display_order(merged)}}
    if task_metrics is not None:
        updated["tasks"] = [
            {**task, "metrics": {**task.get("metrics", {}), **outcomes}}
            for task, outcomes in zip(record.get("tasks", []), task_metrics)
        ]
    return updated


def rescore_record(
    store: ResultStore,
    record: dict,
    metric_names: list[str] | None = None,
    reporter: Reporter | None = None,
    device: str = "cpu",
) -> tuple[dict, RescoreOutcome]:
    """Rescore one stored `ok` record (the metrics it holds, or `metric_names`); return the updated record (not yet
    written) and what happened."""
    key = RunKey.from_dict(record["key"])
    # By default the metrics the run holds; `metric_names` may add others (or restrict them).
    names = (
        metric_names
        if metric_names is not None
        else in_display_order(set(record.get("metrics", {})) & set(METRICS.names()))
    )
    split = rebuild_split(record)
    samples = _load_samples(store, record, split)
    n_tasks = len(split.splits) if isinstance(split, TaskSet) else 1
    capabilities = set(record.get("method", {}).get("capabilities", ()))
    needs_model = [n for n in names if METRICS.get(n).runs_on(capabilities)]
    models, unavailable = ([None] * n_tasks, None)
    if needs_model:
        models, unavailable = load_models(store, record, n_tasks, device)
    kept = {name: f"not rescored: {unavailable}" for name in needs_model} if unavailable else {}
    to_score = [name for name in names if name not in kept]
    timings: dict[str, float] = {}
    start = time.perf_counter()
    metrics, task_metrics = _score_at_run_threads(record, split, samples, models, to_score, reporter, timings, device)

    updated = _merged(record, metrics, task_metrics, kept)
    changed = [name for name in metrics if not _same(record.get("metrics", {}).get(name), metrics[name])]
    # Only the settings of the metrics scored now are current; the others keep what their values were measured
    # with, so a record whose other metrics' settings have since changed stays stale for `bench run`.
    settings = {**record["evaluation"].get("settings", {}), **profile_settings(key.profile, to_score)}
    updated["evaluation"] = {**record["evaluation"], "settings": settings, "device": device}
    updated["rescored"] = {
        "at": utc_now(),
        "code": git_commit(),
        "metrics": to_score,
        "kept": kept,
        "seconds": time.perf_counter() - start,
        "timings": timings,
    }
    return updated, RescoreOutcome(key, "rescored", kept=kept, changed=changed)


def rescore(
    store: ResultStore,
    methods: list[str] | None = None,
    metric_names: list[str] | None = None,
    reporter: Reporter | None = None,
    device: str = "cpu",
    errors: list[str] | None = None,
) -> list[RescoreOutcome]:
    """Rescore every stored `ok` run (of `methods`, if given) and write each record as soon as it is done."""
    outcomes = []
    for record in list(store.records(errors)):
        key = RunKey.from_dict(record["key"])
        if methods is not None and key.method not in methods:
            continue
        if record["status"] != "ok":
            outcomes.append(RescoreOutcome(key, "skipped", reason=f"the run is recorded as {record['status']}"))
            continue
        try:
            updated, outcome = rescore_record(store, record, metric_names, reporter, device)
        except RescoreError as exc:
            outcomes.append(RescoreOutcome(key, "failed", reason=str(exc)))
            continue
        store.write(updated)
        outcomes.append(outcome)
    return outcomes
