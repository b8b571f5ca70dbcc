"""The Python API: `bench.evaluate` scores samples, `bench.run` runs a sweep; the CLI is a thin layer over both.

    import bench

    scores = bench.evaluate(my_generator, dataset="fashion-mnist", shots=4, seed=0, metrics=["fid", "coverage"])
    scores["coverage"]            # the value
    scores.outcomes["coverage"]   # value, status and card (how it was measured)
    scores.frame()                # one row per metric (pandas)

    records = bench.run("vae,dcgan", dataset="fashion-mnist", profile="smoke", seeds=[0, 1])

`evaluate` takes an array (uint8, or float in [0, 1]; (N, H, W), (N, C, H, W) or (N, H, W, C)), a path
(`.npz`/`.npy`, or a folder of image files), or a generator callable `fn(n) -> array` that is sampled
in batches, as clean-fid samples a generator. It scores as `bench run` scores a stored run (the same
`score` function, evaluation seed and `quick` metric settings unless `profile` says otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data.datasets import DATASETS
from bench.data.datasets.folder import PREFIX as FOLDER_PREFIX
from bench.data.splits import DEFAULT_CHARACTERS, UNCONDITIONAL_PROTOCOL, TaskSet, make_run_split, validate_shots
from bench.harness.executor import default_jobs, run_benchmark
from bench.harness.leaderboard import write_leaderboard
from bench.harness.plan import EVAL_SAMPLES, RunSpec
from bench.harness.plugins import import_modules, user_modules
from bench.harness.samples import FOLDER_CONVERSION, SampleFileError, load_sample_folder, load_samples, validate_samples
from bench.harness.scoring import score
from bench.harness.store import ResultStore
from bench.sdk.method import PROFILES
from bench.sdk.progress import NullReporter, Reporter
from bench.sdk.registry import UnknownNameError
from methods import METHODS, method_names
from metrics import METRICS, profile_settings

Samples = np.ndarray | torch.Tensor | str | os.PathLike | Callable[[int], Any]
DEFAULT_RESULTS_DIR = Path("results")


@dataclass
class Evaluation:
    """What `evaluate` measured: an outcome per metric (value or why not, and its card), the split, and timings."""

    outcomes: dict[str, dict]
    split: dict
    n_samples: int
    timings: dict[str, float]
    tasks: list | None = None  # task sets (Omniglot): the outcomes per task
    source: dict = field(default_factory=dict)  # where the samples came from (a folder: its conversion, files skipped)

    def __getitem__(self, metric: str) -> float:
        """The value of `metric`; KeyError naming the metric's status and reason when it has none."""
        outcome = self.outcomes[metric]
        if outcome.get("status") != "ok":
            why = outcome.get("reason") or outcome.get("error") or ""
            raise KeyError(f"{metric} has no value: {outcome.get('status')} {why}".strip())
        return outcome["value"]

    def frame(self):
        """One row per metric: metric, status, value, better (higher/lower), reason, card (pandas DataFrame)."""
        import pandas as pd

        rows = [
            {
                "metric": name,
                "status": outcome.get("status"),
                "value": outcome.get("value"),
                "better": {True: "higher", False: "lower", None: None}[METRICS.get(name).higher_is_better],
                "reason": outcome.get("reason") or outcome.get("error"),
                "card": outcome.get("card"),
            }
            for name, outcome in self.outcomes.items()
        ]
        return pd.DataFrame(rows).set_index("metric")

    def to_dict(self) -> dict:
        result = {
            "n_samples": self.n_samples,
            **self.source,
            "split": self.split,
            "metrics": self.outcomes,
            "timings": self.timings,
        }
        if self.tasks is not None:
            result["tasks"] = self.tasks
        return result


def sample_callable(generator: Callable[[int], Any], n: int, batch_size: int, image_shape) -> torch.Tensor:
    """`n` images from `generator(k)` called for batches of at most `batch_size`, each batch validated."""
    batches, drawn = [], 0
    while drawn < n:
        k = min(batch_size, n - drawn)
        batch = generator(k)
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().cpu().numpy()
        batch = np.asarray(batch)
        if len(batch) != k:
            raise SampleFileError(f"the generator returned {len(batch)} images when asked for {k}")
        batches.append(validate_samples(batch, image_shape, f"generator batch {len(batches) + 1}", min_images=1))
        drawn += k
    return torch.cat(batches)


def load_any(samples: Samples, image_shape, n: int, batch_size: int, key: str | None) -> tuple[torch.Tensor, dict]:
    """The images of any accepted input as float32 (N, C, H, W) in [0, 1], and what to record about their source."""
    if callable(samples) and not isinstance(samples, (np.ndarray, torch.Tensor)):
        return sample_callable(samples, n, batch_size, image_shape), {"samples": "generator", "generated": n}
    if isinstance(samples, (str, os.PathLike)):
        path = Path(samples)
        if path.is_dir():
            images, skipped = load_sample_folder(path, image_shape)
            return images, {"samples": str(path), "folder": {"conversion": FOLDER_CONVERSION, "skipped": skipped}}
        return load_samples(path, image_shape, key), {"samples": str(path)}
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    if isinstance(samples, np.ndarray):
        return validate_samples(samples, image_shape), {"samples": "array"}
    raise SampleFileError(
        f"samples must be an array, a tensor, a path (.npz/.npy or a folder of images) or a callable fn(n) -> images; "
        f"got {type(samples).__name__}"
    )


def evaluate(
    samples: Samples,
    *,
    dataset: str,
    novel_class: int | str | None = None,
    shots: int = 4,
    seed: int = 0,
    metrics: Sequence[str] | str | None = None,
    n: int | None = None,
    batch_size: int = 500,
    characters: int | None = None,
    key: str | None = None,
    profile: str = "quick",
    device: str = "cpu",
    reporter: Reporter | None = None,
) -> Evaluation:
    """Score samples against the evaluation reference of a split (dataset, novel class, shots, support draw `seed`).

    `samples`: see the module docstring; a callable is asked for `n` images (default: the profile's sample count).
    `metrics`: names or a comma-separated string (default: every metric; those that need a fitted model are not
    applicable). `profile`: whose metric settings to use (`bench evaluate` uses `quick`, as stored runs do).
    Raises `UnknownNameError` for unknown names, `SampleFileError` for unusable samples, `DataNotFoundError` when the
    dataset is not on disk.
    """
    if profile not in PROFILES:
        raise UnknownNameError("profile", profile, list(PROFILES))
    spec = DATASETS.get(dataset)
    metric_list = METRICS.resolve(metrics if isinstance(metrics, str) else ",".join(metrics)) if metrics else None
    validate_shots(shots)
    images, source = load_any(samples, spec.image_shape, n or EVAL_SAMPLES[profile], batch_size, key)
    split = make_run_split(spec.name, shots, seed, novel_class, characters or DEFAULT_CHARACTERS)
    n_tasks = len(split.splits) if isinstance(split, TaskSet) else 1
    if len(images) % n_tasks or len(images) // n_tasks < 2:
        raise SampleFileError(
            f"{len(images)} images cannot be divided among the {n_tasks} tasks of {split.info.split_id}: give the same "
            "number (at least 2) per novel character, in task order (as `bench run` stores them)"
        )
    # The stored runs' scoring: the same function and the evaluation seed derived from `seed`, so rescoring a stored
    # sample file reproduces the run's values.
    timings: dict[str, float] = {}
    settings = profile_settings(profile)
    outcomes, task_outcomes = score(
        split, images, [None] * n_tasks, settings, metric_list, reporter or NullReporter(), timings, device=device
    )
    split_info = {k: v for k, v in split.info.to_dict().items() if k != "data_provenance"}
    return Evaluation(outcomes, split_info, int(images.shape[0]), timings, task_outcomes, source)


def run_spec(
    methods: str | Sequence[str],
    *,
    dataset: str,
    shots: int = 4,
    seeds: Sequence[int] = (0,),
    train_seeds: Sequence[int] = (0,),
    profile: str = "quick",
    novel_class: int | str | None = None,
    characters: int | None = None,
    device: str = "cpu",
    eval_device: str | None = None,
    n_samples: int | None = None,
    metrics: Sequence[str] | str | None = None,
    overwrite: bool = False,
    imports: Sequence[str] = (),
) -> RunSpec:
    """The `RunSpec` of a sweep, every name and number checked before anything is built (ValueError or
    UnknownNameError saying what is wrong; DataNotFoundError when the dataset is not on disk; PluginImportError when a
    module of `imports` cannot be imported). `imports`: modules that register methods or metrics (`--import`)."""
    import_modules(imports)
    if profile not in PROFILES:
        raise UnknownNameError("profile", profile, list(PROFILES))
    names = methods if isinstance(methods, str) else ",".join(methods)
    # `all`: every method, then the reference rows that give the leaderboard its scale.
    method_list = METHODS.resolve(names, method_names(references=False) + method_names(methods=False))
    # A folder spec travels as given: worker processes can build the folder's dataset from it, not from its name.
    dataset_name = dataset.strip() if dataset.strip().startswith(FOLDER_PREFIX) else DATASETS.get(dataset).name
    method_list = methods_that_apply(method_list, dataset_name, named=names.strip().lower() != "all")
    metric_list = METRICS.resolve(metrics if isinstance(metrics, str) else ",".join(metrics)) if metrics else None
    validate_shots(shots)
    DATASETS.get(dataset).novel_classes(novel_class)
    for option, values in (("seeds", seeds), ("train seeds", train_seeds)):
        if not values or any(int(v) != v or v < 0 for v in values):
            raise ValueError(f"{option} must be whole numbers of at least 0, got {list(values)}")
    if n_samples is not None and n_samples < 2:
        raise ValueError("the number of samples must be at least 2")
    if characters is not None and characters < 1:
        raise ValueError("characters must be at least 1")
    return RunSpec(
        method_list,
        dataset_name,
        shots=shots,
        seeds=[int(s) for s in seeds],
        train_seeds=[int(t) for t in train_seeds],
        profile=profile,
        novel_class=novel_class,
        characters=characters,
        device=device,
        eval_device=eval_device,
        n_samples=n_samples,
        metrics=metric_list,
        overwrite=overwrite,
        # With the modules of methods registered from outside (a Python caller's own module), for worker processes.
        imports=tuple(dict.fromkeys([*imports, *(m for m in user_modules(method_list) if m != "__main__")])),
    )


def what_is_missing(method: str, dataset: str) -> str | None:
    """Why `method` cannot run on `dataset` (None if it can), from the dataset's declarations alone: the
    unconditional protocol (a folder without classes) has no base classes and no unseen novel images."""
    data = DATASETS.get(dataset)
    with_classes = UNCONDITIONAL_PROTOCOL not in data.protocols
    return METHODS.get(method).what_is_missing(
        base_images=with_classes, class_descriptions=bool(data.class_descriptions), unseen_novel_images=with_classes
    )


def methods_that_apply(method_list: list[str], dataset: str, named: bool) -> list[str]:
    """`method_list` on `dataset`: `all` leaves out the methods the dataset's protocol cannot run; naming one is a
    ValueError that lists those which can, before anything is built."""
    missing = {name: reason for name in method_list if (reason := what_is_missing(name, dataset))}
    if named and missing:
        runnable = [name for name in method_names() if not what_is_missing(name, dataset)]
        raise ValueError(
            f"on {dataset}: {'; '.join(f'{name} {reason}' for name, reason in missing.items())}. "
            f"Methods that run on it: {', '.join(runnable)}"
        )
    return [name for name in method_list if name not in missing]


def default_leaderboard(results_dir: Path) -> Path:
    """The leaderboard of a results directory: inside it, except the default `results/`, whose leaderboard is the
    repository's `leaderboard.md` beside it."""
    results_dir = Path(results_dir)
    if results_dir.resolve() == DEFAULT_RESULTS_DIR.resolve():
        return results_dir.resolve().parent / "leaderboard.md"
    return results_dir / "leaderboard.md"


def run(
    methods: str | Sequence[str],
    *,
    dataset: str,
    profile: str = "quick",
    seeds: Sequence[int] = (0,),
    train_seeds: Sequence[int] = (0,),
    shots: int = 4,
    novel_class: int | str | None = None,
    results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR,
    leaderboard: str | os.PathLike | None = None,
    jobs: int | None = None,
    threads: int = 1,
    reporter: Reporter | None = None,
    executor: str = "local",
    address: str | None = None,
    **options: Any,
) -> list[dict]:
    """Train, sample, evaluate and store every (method, seed, training seed), render the leaderboard, and return the
    run records in plan order (a run already stored and current is not re-run: its stored record is returned).

    `options`: the other fields of `run_spec` (characters, device, eval_device, n_samples, metrics, overwrite,
    imports). `jobs`: runs side by side (default one per core; 1 on CUDA), each at `threads` threads; a method
    defined in the calling script (`__main__`), which a worker process cannot import, makes it 1. `executor="ray"`
    runs one Ray task per run on the cluster at `address` (default: a local instance; `bench.harness.ray_executor`).
    """
    spec = run_spec(
        methods,
        dataset=dataset,
        profile=profile,
        seeds=seeds,
        train_seeds=train_seeds,
        shots=shots,
        novel_class=novel_class,
        **options,
    )
    if (jobs is not None and jobs < 1) or threads < 1:
        raise ValueError("jobs and threads must be at least 1")
    if "__main__" in user_modules(spec.methods):
        if executor != "local":
            raise ValueError("a method defined in the calling script (__main__) runs only with the local executor")
        jobs = 1
    store = ResultStore(results_dir)
    jobs = jobs or default_jobs(spec.device, spec.eval_device)
    outcomes = run_benchmark(spec, store, reporter, jobs=jobs, threads=threads, executor=executor, address=address)
    write_leaderboard(store, Path(leaderboard) if leaderboard else default_leaderboard(Path(results_dir)))
    return [outcome.record for outcome in outcomes]
