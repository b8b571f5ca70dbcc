"""The Ray executor: a sweep's runs as Ray tasks, on a local Ray instance or on a cluster.

Each `RunUnit` (one method, split, seed and training seed) becomes one task that calls `execute_unit` on a
worker, the same function the local executor runs, and reserves the unit's thread count as its CPUs; so a
record made on Ray equals the one the local executor makes at the same threads (tests/test_ray_executor.py).
The worker writes its record itself, atomically, into the results directory: on a cluster every node must
see that directory at the same path (a shared file system such as NFS), and should see `BENCH_CACHE_DIR`
the same way, so that a method's base-class phase is computed once and then loaded by every support draw
(the cache's file lock serialises two tasks of one key). The driver's `BENCH_*` settings and `PYTHONPATH`
are passed to every task, with relative paths made absolute. A task whose run fails writes its failed
record like any run; a task that dies without writing one (its node lost, killed for memory) is reported
with Ray's reason, leaves no record, and is run again by the next sweep; the other tasks go on either way.
The leaderboard is rendered once, by the caller, after the last task.

Ray is an optional extra: `pip install -e '.[ray]'`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.data.splits import run_split_id
from bench.harness.runner import RunOutcome
from bench.harness.store import RunKey

if TYPE_CHECKING:  # the executor module imports this one
    from bench.harness.executor import RunUnit

RAY_MISSING = "--executor ray needs Ray: pip install -e '.[ray]' (the pinned version is in pyproject.toml)"


class ExecutorUnavailable(RuntimeError):
    pass


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ExecutorUnavailable(RAY_MISSING) from exc
    return ray


def task_environment(environ=os.environ) -> dict[str, str]:
    """What every task must see as the driver does: the `BENCH_*` settings (paths, made absolute) and PYTHONPATH
    (each entry made absolute), so that a worker started elsewhere finds the same data, caches and modules."""
    found = {
        name: str(Path(value).expanduser().resolve())
        for name, value in environ.items()
        if name.startswith("BENCH_") and value
    }
    if environ.get("PYTHONPATH"):
        entries = [str(Path(entry).resolve()) for entry in environ["PYTHONPATH"].split(os.pathsep) if entry]
        found["PYTHONPATH"] = os.pathsep.join(entries)
    return found


def unit_key(unit: RunUnit) -> RunKey:
    """The record key a unit's run has (as `plan_run` makes it), without building its split."""
    spec = unit.spec
    split = run_split_id(spec.dataset, spec.shots, unit.novel_class, spec.characters_per_run)
    return RunKey(unit.method, split, spec.profile, unit.seed, unit.train_seed)


def lost_task_outcome(unit: RunUnit, error: Exception) -> RunOutcome:
    """A task that ended without a result: reported as failed, with Ray's reason, and nothing stored."""
    reason = f"the Ray task ended without a result ({type(error).__name__}): {str(error).splitlines()[0][:300]}"
    failure = {"type": type(error).__name__, "reason": reason, "diverged": False}
    return RunOutcome(unit_key(unit), "failed", {"status": "failed", "failure": failure})


def run_units_on_ray(
    units: list[RunUnit],
    execute: Callable[[RunUnit], RunOutcome],
    address: str | None = None,
    on_outcome: Callable[[RunOutcome], None] | None = None,
    num_cpus: int | None = None,
) -> list[RunOutcome]:
    """Execute `units` as Ray tasks running `execute` (`executor.execute_unit`); outcomes in the units' order,
    `on_outcome` called as each ends. Tasks report by their outcomes only: a run's progress stays on its worker.

    `address`: a running cluster's (`ray://host:10001` or `host:6379`, or "auto"); None starts a local instance
    with `num_cpus` CPUs (default: all), stopped again at the end. A Ray instance already initialised in this
    process is used as it is.
    """
    ray = import_ray()
    units = [dataclasses.replace(unit, results_dir=str(Path(unit.results_dir).resolve())) for unit in units]
    started_here = not ray.is_initialized()
    if started_here:
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address is None:
            options["num_cpus"] = num_cpus or os.cpu_count() or 1
        ray.init(address=address, runtime_env={"env_vars": task_environment()}, **options)
    try:
        remote = ray.remote(max_retries=0)(execute)
        pending = {remote.options(num_cpus=unit.threads).remote(unit): index for index, unit in enumerate(units)}
        outcomes: dict[int, RunOutcome] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            try:
                outcomes[index] = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                outcomes[index] = lost_task_outcome(units[index], exc)
            if on_outcome:
                on_outcome(outcomes[index])
        return [outcomes[index] for index in range(len(units))]
    finally:
        if started_here:
            ray.shutdown()
