"""Running a sweep's runs: one after another in this process, or side by side in worker processes.

The unit of work is a `RunUnit`: one (novel class, seed, training seed, method) of a `RunSpec`, with the results
directory and the threads it runs at. `execute_unit` does one unit anywhere (this process, a local
worker, a cluster worker): it builds the split (cached per process, so the methods of one seed share
it), plans the run, and either skips it (already stored and current) or runs it and writes its record.

Threads are part of what a record measures: float reductions (matrix products, feature extraction,
KID's kernel sums in numpy's BLAS) depend on how many threads share them, so a run is reproduced bit
for bit only at the same count (the record's `environment.torch_threads`). Every unit therefore runs at
an explicit count, whatever the executor: `--jobs 1` and `--jobs 2` give identical records at equal
`--threads` (tests/test_executor.py).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue as queue_module
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

import torch

from bench.data.datasets import DATASETS
from bench.data.splits import Split, TaskSet, make_run_split
from bench.harness.environment import thread_count
from bench.harness.plan import RunSpec, plan_run
from bench.harness.plugins import import_modules
from bench.harness.ray_executor import run_units_on_ray
from bench.harness.runner import RunOutcome, is_current, run_one
from bench.harness.store import ResultStore
from bench.sdk.progress import NullReporter, PrefixedReporter, ProgressHandle, Reporter
from methods import METHODS


@dataclass(frozen=True)
class RunUnit:
    """One run of a sweep, self-contained so that another process can execute it."""

    spec: RunSpec
    novel_class: int
    seed: int
    method: str
    results_dir: str
    threads: int
    train_seed: int = 0

    @property
    def label(self) -> str:
        return (
            f"{self.method} seed {self.seed}"
            + (f" train {self.train_seed}" if self.train_seed else "")
            + (f" class {self.novel_class}" if self._many_classes else "")
        )

    @property
    def _many_classes(self) -> bool:
        return self.spec.novel_class is not None and str(self.spec.novel_class).lower() == "all"


def sweep_units(spec: RunSpec, results_dir: str, threads: int) -> list[RunUnit]:
    """The units of `spec` in plan order (novel class, then seed, then training seed, then method), each at
    `threads` threads. Reference rows do not train: they run once per seed, at training seed 0."""
    import_modules(spec.imports)
    for name in spec.methods:  # unknown names and profiles fail before any split is built
        METHODS.get(name).budget_for(spec.profile)
    return [
        RunUnit(spec, novel_class, seed, method, str(results_dir), threads, train_seed)
        for novel_class in DATASETS.get(spec.dataset).novel_classes(spec.novel_class)
        for seed in spec.seeds
        for train_seed in spec.train_seeds
        for method in spec.methods
        if not (METHODS.get(method).is_reference and train_seed != spec.train_seeds[0])
    ]


@functools.lru_cache(maxsize=2)
def _split(dataset: str, shots: int, seed: int, novel_class: int, characters: int) -> tuple[Split | TaskSet, float]:
    """The split of one (novel class, seed), built once per process: the units of one seed run one after another."""
    start = time.perf_counter()
    split = make_run_split(dataset, shots, seed, novel_class, characters)
    return split, time.perf_counter() - start


def execute_unit(unit: RunUnit, reporter: Reporter | None = None) -> RunOutcome:
    """Skip `unit` if its record is stored, `ok` and current (unless the spec overwrites); otherwise run it."""
    spec = unit.spec
    import_modules(spec.imports)  # a spawned worker starts without the user's modules
    cache_before = _split.cache_info().misses
    split, seconds = _split(spec.dataset, spec.shots, unit.seed, unit.novel_class, spec.characters_per_run)
    built_here = _split.cache_info().misses > cache_before
    train_seed = 0 if METHODS.get(unit.method).is_reference else unit.train_seed
    plan = plan_run(spec, unit.method, split, seconds if built_here else 0.0, train_seed)
    store = ResultStore(unit.results_dir)
    if not spec.overwrite and store.is_complete(plan.key):
        stored = store.load(plan.key)
        if is_current(stored, plan):
            return RunOutcome(plan.key, "skipped", stored)
    with thread_count(unit.threads):
        record = run_one(plan, store, reporter or NullReporter())
    return RunOutcome(plan.key, record["status"], record)


EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Shard:
    """`--shard i/N`: the i-th (from 0) of N disjoint parts of a sweep, for schedulers that start N processes (a
    Slurm array): units i, i + N, i + 2N, ... in plan order, so that every part gets a mix of methods."""

    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"a shard is i/N with 0 <= i < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, slash, count = text.partition("/")
        if not slash or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"--shard takes i/N, e.g. 0/4 for the first of four parts; got '{text}'")
        return cls(int(index), int(count))

    def select(self, units: list[RunUnit]) -> list[RunUnit]:
        return units[self.index :: self.count]


def run_benchmark(
    spec: RunSpec,
    store: ResultStore,
    reporter: Reporter | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
    jobs: int = 1,
    threads: int | None = None,
    executor: str = "local",
    address: str | None = None,
    shard: Shard | None = None,
) -> list[RunOutcome]:
    """Run every (novel class, seed, method) of `spec` (or of its `shard`) into `store`, each at `threads` threads
    (default: this process's count); outcomes in plan order. `executor`: "local" runs `jobs` at a time on this
    machine; "ray" runs one task per run on a Ray cluster at `address` (None: a local instance of `jobs` x
    `threads` CPUs).

    A run already stored with status `ok` is skipped unless `spec.overwrite`, or unless it was measured differently
    (`is_current`): then it is stale and run again.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor '{executor}' (valid: {', '.join(EXECUTORS)})")
    threads = threads or torch.get_num_threads()
    units = sweep_units(spec, str(store.root), threads)
    if shard is not None:
        units = shard.select(units)
    if executor == "ray":
        return run_units_on_ray(units, execute_unit, address, on_outcome, num_cpus=jobs * threads)
    return run_units(units, jobs, reporter, on_outcome)


def default_jobs(*devices: str | None) -> int:
    """Runs side by side by default: one per core on the CPU; one when a GPU is used (the runs would share it)."""
    if any(device and device.startswith("cuda") for device in devices):
        return 1
    return max(1, os.cpu_count() or 1)


def run_units(
    units: list[RunUnit],
    jobs: int = 1,
    reporter: Reporter | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Execute `units`, `jobs` at a time (1: in this process); outcomes in the units' order.

    `on_outcome` is called as each run ends (in completion order). With `jobs > 1` every run is done in a
    worker process (spawned: no state inherited from this one), its progress forwarded to `reporter`.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    reporter = reporter or NullReporter()
    if jobs == 1 or len(units) <= 1:
        outcomes = []
        for unit in units:
            outcomes.append(execute_unit(unit, PrefixedReporter(reporter, f"{unit.label}: ")))
            if on_outcome:
                on_outcome(outcomes[-1])
        return outcomes
    return _run_in_workers(units, jobs, reporter, on_outcome)


# --- worker processes -------------------------------------------------------------------------------------------

_worker_events: multiprocessing.Queue | None = None


def _start_worker(events: multiprocessing.Queue) -> None:
    global _worker_events
    _worker_events = events


def _execute_in_worker(index: int, unit: RunUnit) -> RunOutcome:
    reporter = _QueueReporter(_worker_events, index, unit.label) if _worker_events is not None else NullReporter()
    return execute_unit(unit, reporter)


class _QueueReporter:
    """A worker's progress, sent as events to the parent process, which shows them (`_forward_events`)."""

    def __init__(self, events: multiprocessing.Queue, run_index: int, label: str):
        self.events, self.run_index, self.label = events, run_index, label
        self.count = 0

    def task(self, description: str, total: int) -> ProgressHandle:
        self.count += 1
        key = (self.run_index, self.count)
        events = self.events
        events.put(("task", key, f"{self.label}: {description}", total))

        class _Handle:
            def advance(self, amount: int = 1) -> None:
                events.put(("advance", key, amount))

            def close(self) -> None:
                events.put(("close", key))

        return _Handle()


def _forward_events(events: multiprocessing.Queue, reporter: Reporter, stop: threading.Event) -> None:
    """Show the workers' progress events through `reporter` until `stop` is set and the queue is drained."""
    handles: dict[tuple[int, int], ProgressHandle] = {}
    while True:
        try:
            event = events.get(timeout=0.2)
        except queue_module.Empty:
            if stop.is_set():
                break
            continue
        kind, key = event[0], event[1]
        if kind == "task":
            handles[key] = reporter.task(event[2], event[3])
        elif kind == "advance" and key in handles:
            handles[key].advance(event[2])
        elif kind == "close" and key in handles:
            handles.pop(key).close()
    for handle in handles.values():  # a worker that died mid-task leaves its bar open
        handle.close()


def _run_in_workers(
    units: list[RunUnit], jobs: int, reporter: Reporter, on_outcome: Callable[[RunOutcome], None] | None
) -> list[RunOutcome]:
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools mid-use
    events = context.Queue()
    stop = threading.Event()
    forwarder = threading.Thread(target=_forward_events, args=(events, reporter, stop), daemon=True)
    forwarder.start()
    outcomes: dict[int, RunOutcome] = {}
    try:
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(units)), mp_context=context, initializer=_start_worker, initargs=(events,)
        ) as pool:
            pending = {pool.submit(_execute_in_worker, index, unit): index for index, unit in enumerate(units)}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = pending.pop(future)
                        outcomes[index] = future.result()
                        if on_outcome:
                            on_outcome(outcomes[index])
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    finally:
        stop.set()
        forwarder.join(timeout=5)
    return [outcomes[index] for index in range(len(units))]
