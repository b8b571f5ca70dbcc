"""The results store: one JSON record per run, written atomically, plus its samples and sample grid.

Layout under the results directory:

    runs/<dataset>/<split>/<method>/<profile>/seed<k>.json   the run record (seed<k>-train<t>.json for a training
                                                 seed t other than 0: `RunKey.relative`)
    samples/<dataset>/<split>/<method>/<profile>/seed<k>.npz  the samples as uint8 (what `bench rescore` scores)
    checkpoints/<dataset>/<split>/<method>/<profile>/seed<k>.pt  the fitted model, for model metrics
                                                 (a task set: seed<k>/task<i>.pt; not committed)
    grids/<dataset>/<split>/<method>/<profile>/seed<k>.png    support row + samples grid

A record is written to a temporary file in its folder and renamed into place, so a killed run
leaves either the previous record or none, never a partial one. Reruns skip runs whose record
says `ok` unless asked to overwrite; failed runs are tried again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.sdk.files import atomic_write_bytes

RECORD_SCHEMA = 1


@dataclass(frozen=True)
class RunKey:
    """Which run a record is: method, split, profile, support draw `seed` and the method's `train_seed`
    (the seed of its initialisation and training noise, 0 unless `--train-seeds` says otherwise)."""

    method: str
    split_id: str  # e.g. fashion-mnist/novel9-4shot.v1
    profile: str
    seed: int
    train_seed: int = 0

    @property
    def relative(self) -> Path:
        name = f"seed{self.seed}" + (f"-train{self.train_seed}" if self.train_seed else "")
        return Path(self.split_id) / self.method / self.profile / name

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "split_id": self.split_id,
            "profile": self.profile,
            "seed": self.seed,
            "train_seed": self.train_seed,
        }

    @classmethod
    def from_dict(cls, data: dict) -> RunKey:
        return cls(data["method"], data["split_id"], data["profile"], int(data["seed"]), int(data.get("train_seed", 0)))


RunId = int | str


def run_id(key: dict) -> RunId:
    """A run's identity within its (split, profile, method), as baselines list it: the support draw `seed`, or
    `"<seed>-train<t>"` for a training seed t other than 0."""
    seed, train_seed = int(key["seed"]), int(key.get("train_seed", 0))
    return seed if train_seed == 0 else f"{seed}-train{train_seed}"


def parse_run_id(value) -> RunId:
    """A run id as a baseline file holds it (an int, or a string of either form) -> `run_id`'s form."""
    text = str(value)
    seed, _, train_seed = text.partition("-train")
    return run_id({"seed": seed, "train_seed": train_seed or 0})


def run_id_order(value: RunId) -> tuple[int, int]:
    seed, _, train_seed = str(value).partition("-train")
    return int(seed), int(train_seed or 0)


class MalformedRecordError(ValueError):
    pass


class ResultStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def record_path(self, key: RunKey) -> Path:
        return self.root / "runs" / key.relative.with_suffix(".json")

    def samples_path(self, key: RunKey) -> Path:
        return self.root / "samples" / key.relative.with_suffix(".npz")

    def checkpoint_path(self, key: RunKey, task: int | None = None) -> Path:
        """The fitted model of a run (of task `task` of a task set): what model metrics need to be rescored."""
        if task is None:
            return self.root / "checkpoints" / key.relative.with_suffix(".pt")
        return self.root / "checkpoints" / key.relative / f"task{task}.pt"

    def grid_path(self, key: RunKey) -> Path:
        return self.root / "grids" / key.relative.with_suffix(".png")

    def loss_curves_path(self, key: RunKey) -> Path:
        return self.root / "plots" / key.relative.with_suffix(".png")

    def latent_plot_path(self, key: RunKey) -> Path:
        path = self.loss_curves_path(key)
        return path.with_name(f"{path.stem}.latent.png")

    def load(self, key: RunKey) -> dict | None:
        path = self.record_path(key)
        return read_record(path) if path.is_file() else None

    def is_complete(self, key: RunKey) -> bool:
        try:
            record = self.load(key)
        except MalformedRecordError:
            return False
        return record is not None and record.get("status") == "ok"

    def write(self, record: dict) -> Path:
        key = RunKey.from_dict(record["key"])
        path = self.record_path(key)
        atomic_write_bytes(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        return path

    def records(self, errors: list[str] | None = None) -> Iterator[dict]:
        """Every readable record; unreadable ones are reported in `errors` (if given) and skipped."""
        runs = self.root / "runs"
        if not runs.is_dir():
            return
        for path in sorted(runs.rglob("*.json")):
            try:
                yield read_record(path)
            except MalformedRecordError as exc:
                if errors is not None:
                    errors.append(str(exc))


def read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MalformedRecordError(f"{path}: not a readable JSON record ({exc})") from exc
    for field in ("schema", "key", "status"):
        if field not in record:
            raise MalformedRecordError(f"{path}: record has no '{field}' field")
    if record["schema"] != RECORD_SCHEMA:
        raise MalformedRecordError(f"{path}: record schema {record['schema']} is not {RECORD_SCHEMA}")
    return record
