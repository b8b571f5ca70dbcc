"""Faults during long work: a sweep killed at any moment, two sweeps writing one results folder, damaged
records, a full disk. After each: no partial or corrupt record, the leaderboard renders, and running the
same command again completes exactly the runs that are missing, with the numbers of an uninterrupted sweep.

`pytest -m faults` runs only these. The number of kills at random moments is `BENCH_FAULT_KILLS` (3 by
default, what CI runs); the kills aimed at the moments a file is renamed into place run every time. Each
test prints its counts (kills survived, concurrent sweeps, records lost) to the terminal (`-s` or `-rA`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import requires_data

from bench.harness.leaderboard import write_leaderboard
from bench.harness.store import MalformedRecordError, ResultStore, read_record

pytestmark = [pytest.mark.faults, requires_data("fashion-mnist")]

RANDOM_KILLS = int(os.environ.get("BENCH_FAULT_KILLS", "3"))
SWEEP = [
    "run",
    "--methods",
    "vae,support-augment",
    "--dataset",
    "fashion-mnist",
    "--profile",
    "smoke",
    "--seeds",
    "0,1",
    "--metrics",
    "mse,coverage",
    "--jobs",
    "1",
    "--threads",
    "1",
]
RUNS = {("vae", 0), ("vae", 1), ("support-augment", 0), ("support-augment", 1)}

# Runs the CLI with `os.replace` patched: the `nth` rename of a file whose path contains `target` kills the
# process with SIGKILL instead (the temporary file is written and flushed, the rename never happens).
KILL_AT_RENAME = """
import os, signal, sys
target, nth = sys.argv[1], int(sys.argv[2])
seen = 0
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    global seen
    if target in str(dst):
        seen += 1
        if seen == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = ["bench", *sys.argv[3:]]
from bench.harness.cli import main
main()
"""

# Runs the CLI with every flush of a file written through `atomic_write_bytes` failing as a full disk does.
DISK_FULL_AFTER = """
import errno, os, sys
allowed = int(sys.argv[1])
real_fsync = os.fsync
calls = 0
def fsync(fd):
    global calls
    calls += 1
    if calls > allowed:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)
os.fsync = fsync
sys.argv = ["bench", *sys.argv[2:]]
from bench.harness.cli import main
main()
"""


def _env(cache: Path) -> dict:
    return {**os.environ, "BENCH_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}


def bench(args: list[str], cache: Path, program: str = "from bench.harness.cli import main; main()", extra=()):
    command = [sys.executable, "-c", program, *extra, *args]
    return subprocess.run(command, capture_output=True, text=True, env=_env(cache), timeout=900)


def sweep_args(results: Path) -> list[str]:
    return [*SWEEP, "--results-dir", str(results)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_consistent(results: Path) -> dict[tuple[str, int], dict]:
    """Every stored record is whole and its artefacts are the files it names; the leaderboard renders.
    Returns the complete (`ok`) records by (method, seed)."""
    complete = {}
    for path in sorted((results / "runs").rglob("*.json")) if (results / "runs").is_dir() else []:
        try:
            record = read_record(path)
        except MalformedRecordError as exc:
            pytest.fail(f"a killed sweep left a damaged record: {exc}")
        if record["status"] != "ok":
            continue
        artifacts = record["artifacts"]
        assert sha256(results / artifacts["samples"]) == artifacts["samples_sha256"], path
        for checkpoint in artifacts.get("checkpoints", []):
            assert sha256(results / checkpoint["path"]) == checkpoint["sha256"], path
        complete[(record["key"]["method"], record["key"]["seed"])] = record
    _, unreadable = write_leaderboard(ResultStore(results), results / "leaderboard.md")
    assert not unreadable
    return complete


def executed_runs(stderr: str) -> set[tuple[str, int]]:
    """The runs a sweep ran (not skipped), from its per-run lines (`vae seed 1: ok in 3 s`)."""
    return {(m, int(s)) for m, s in re.findall(r"^(\S+) seed (\d+): ok", stderr, flags=re.MULTILINE)}


def metric_values(record: dict) -> dict:
    return {name: outcome.get("value") for name, outcome in record["metrics"].items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The sweep run once without faults: its records are what every interrupted sweep must end with."""
    root = tmp_path_factory.mktemp("uninterrupted")
    started = time.perf_counter()
    done = bench(sweep_args(root / "results"), root / "cache")
    assert done.returncode == 0, done.stderr
    seconds = time.perf_counter() - started
    records = assert_consistent(root / "results")
    assert set(records) == RUNS
    return records, seconds, root / "results"


def finish_and_compare(results: Path, cache: Path, uninterrupted_records: dict) -> set:
    """Run the sweep again to its end; it must run exactly the missing runs and end with the uninterrupted numbers."""
    before = assert_consistent(results)
    rerun = bench(sweep_args(results), cache)
    assert rerun.returncode == 0, rerun.stderr
    assert executed_runs(rerun.stderr) == RUNS - set(before)
    after = assert_consistent(results)
    assert set(after) == RUNS
    for key, record in after.items():
        assert metric_values(record) == metric_values(uninterrupted_records[key]), key
    return set(before)


@pytest.mark.parametrize(
    "target, nth",
    [
        ("/samples/", 2),  # the second run's samples: its record is not written yet
        ("/runs/", 3),  # the third run's record, written and flushed, never renamed into place
        ("leaderboard.md", 1),  # every record stored, the leaderboard being rendered
    ],
)
def test_a_sweep_killed_while_a_file_is_renamed_into_place_leaves_a_store_a_rerun_completes(
    tmp_path, uninterrupted, target, nth
):
    records, _, _ = uninterrupted
    results, cache = tmp_path / "results", tmp_path / "cache"
    killed = bench(sweep_args(results), cache, KILL_AT_RENAME, extra=(target, str(nth)))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    stored = finish_and_compare(results, cache, records)
    print(f"killed at rename #{nth} of {target}: {len(stored)} complete records kept, records lost: 0")


def test_sweeps_killed_at_random_moments_lose_nothing_and_a_rerun_completes_exactly_the_rest(tmp_path, uninterrupted):
    records, seconds, _ = uninterrupted
    results, cache = tmp_path / "results", tmp_path / "cache"
    # Percent of an uninterrupted sweep's time, one drawn from each of RANDOM_KILLS equal parts of it.
    rng = random.Random(20)
    moments = [round(100 * (part + rng.random()) / RANDOM_KILLS) or 1 for part in range(RANDOM_KILLS)]
    survived, stored = 0, {}
    for percent in moments:
        process = subprocess.Popen(
            [sys.executable, "-c", "from bench.harness.cli import main; main()", *sweep_args(results)],
            env=_env(cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            process.wait(timeout=seconds * percent / 100)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        now = assert_consistent(results)
        lost = {key for key in stored if key not in now or now[key]["created_at"] != stored[key]["created_at"]}
        assert not lost, f"records lost or rewritten by a later killed sweep: {sorted(lost)}"
        stored = now
        survived += 1
    finish_and_compare(results, cache, records)
    print(f"kills at {moments}% of the sweep's time: {survived} survived, records lost: 0")


def test_two_sweeps_writing_one_results_folder_at_once_lose_nothing(tmp_path, uninterrupted):
    records, _, _ = uninterrupted
    results, cache = tmp_path / "results", tmp_path / "cache"  # one pretraining cache too, as cluster workers share
    command = [sys.executable, "-c", "from bench.harness.cli import main; main()", *sweep_args(results)]
    sweeps = [
        subprocess.Popen(command, env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [sweep.communicate(timeout=900)[1] for sweep in sweeps]
    assert [sweep.returncode for sweep in sweeps] == [0, 0], outputs
    stored = assert_consistent(results)
    assert set(stored) == RUNS
    for key, record in stored.items():
        assert metric_values(record) == metric_values(records[key]), key
    leftovers = [p for p in results.rglob("*.tmp")]
    assert not leftovers, leftovers
    print(f"2 concurrent sweeps, {len(stored)} records, records lost: 0")


@pytest.fixture
def stored_copy(tmp_path, uninterrupted):
    """A copy of the uninterrupted sweep's results folder, with a baseline made from it."""
    results = tmp_path / "results"
    shutil.copytree(uninterrupted[2], results)
    baseline = tmp_path / "baseline.json"
    made = bench(["baseline", "--out", str(baseline), "--results-dir", str(results)], tmp_path / "cache")
    assert made.returncode == 0, made.stderr
    return results, baseline


def test_a_truncated_or_edited_record_is_named_skipped_by_the_leaderboard_and_fails_the_check(stored_copy, tmp_path):
    results, baseline = stored_copy
    truncated, edited = sorted((results / "runs").rglob("seed0.json"))[:2]
    truncated.write_bytes(truncated.read_bytes()[:100])
    record = json.loads(edited.read_text())
    del record["key"]
    edited.write_text(json.dumps(record))

    cache = tmp_path / "cache"
    board = bench(["leaderboard", "--results-dir", str(results)], cache)
    assert board.returncode == 0, board.stderr
    flat = " ".join(board.stderr.split())
    assert str(truncated) in flat and "not a readable JSON record" in flat
    assert str(edited) in flat and "no 'key' field" in flat

    checked = bench(["check", "--baseline", str(baseline), "--results-dir", str(results)], cache)
    assert checked.returncode == 1
    flat = " ".join(checked.stderr.split())
    assert f"unreadable record: {truncated}" in flat and f"unreadable record: {edited}" in flat
    assert "Traceback" not in checked.stderr


def test_a_full_disk_stops_the_sweep_with_a_clear_error_and_a_consistent_store(tmp_path, uninterrupted):
    records, _, _ = uninterrupted
    results, cache = tmp_path / "results", tmp_path / "cache"
    # Writes succeed until the disk fills, part of the way through the sweep.
    full = bench(sweep_args(results), cache, DISK_FULL_AFTER, extra=("9",))
    assert full.returncode == 1, full.stderr
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr
    assert "run the same command again" in " ".join(full.stderr.split())
    assert not list(results.rglob("*.tmp"))
    finish_and_compare(results, cache, records)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if not shutil.which("mount") or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode == 0


def test_a_results_folder_on_a_tiny_filesystem_fails_cleanly(tmp_path):
    disk = tmp_path / "tiny"
    if not _mount_tmpfs(disk, "96k"):
        pytest.skip("mounting a tmpfs needs root (the simulated full disk above runs everywhere)")
    try:
        results = disk / "results"
        full = bench(sweep_args(results), tmp_path / "cache")
        assert full.returncode == 1, full.stderr
        assert os.strerror(errno.ENOSPC) in full.stderr and "Traceback" not in full.stderr
        assert not list(results.rglob("*.tmp"))
        for path in (results / "runs").rglob("*.json") if (results / "runs").is_dir() else []:
            read_record(path)  # whatever was stored is whole
    finally:
        subprocess.run(["umount", str(disk)], check=False)
