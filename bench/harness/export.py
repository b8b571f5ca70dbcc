"""`bench export`: the stored run records as one tidy table, one row per (run, metric).

Columns (`COLUMNS`): the run (`split_id`, `dataset`, `method`, `profile`, `seed`, `train_seed`,
`is_reference`), the metric's outcome (`metric`, `value`, `std`, `status`, `reason`,
`card_fingerprint`) and where the row came from (`created_at`, `code`: the commit the run was
made with).

- `value` is set only for `status` `ok`; `std` is the outcome's own spread when it has one
  (`std`, e.g. `kid`'s std over subsets, or `std_over_tasks` of a task-set mean), else empty.
- `status` is the outcome's (`ok`, `not_applicable`, `unavailable`, `error`); `reason` is the
  not_applicable/unavailable reason or the error text.
- A run that is not `ok` (a `failed` run) gets one row with an empty `metric`, the run's
  status and its failure reason. Filtering by metric keeps these rows: a failed run has no
  value for any metric.
- `card_fingerprint` is `bench.harness.leaderboard.card_fingerprint` of the outcome's card: values
  are comparable when their fingerprints agree.

Reading a CSV back with pandas, pass `dtype={"card_fingerprint": str, "code": str}`: an
8-hex-digit fingerprint can look like a number ("12345678", "1234e567").
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from bench.harness.leaderboard import card_fingerprint
from bench.harness.store import ResultStore
from bench.sdk.registry import Registry, UnknownNameError
from methods import METHODS
from metrics import METRICS

FORMATS = ("csv", "jsonl", "parquet")
COLUMNS = [
    "split_id",
    "dataset",
    "method",
    "profile",
    "seed",
    "train_seed",
    "is_reference",
    "metric",
    "value",
    "std",
    "status",
    "reason",
    "card_fingerprint",
    "created_at",
    "code",
]
# Outcome keys holding a spread of the value, in order of preference.
STD_KEYS = ("std", "std_over_tasks")


class ExportError(ValueError):
    """An export that cannot be written as asked (e.g. parquet without an output file)."""


class ParquetEngineMissing(ExportError):
    """pandas found no parquet engine (pyarrow) on this machine."""


def _number(value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _code(record: dict) -> str | None:
    code = record.get("code")
    return code.get("commit") if isinstance(code, dict) else code


def record_rows(record: dict) -> list[dict]:
    """The export rows of one run record."""
    key = record["key"]
    base = {
        "split_id": key["split_id"],
        "dataset": record.get("split", {}).get("dataset") or key["split_id"].split("/", 1)[0],
        "method": key["method"],
        "profile": key["profile"],
        "seed": int(key["seed"]),
        "train_seed": int(key.get("train_seed", 0)),
        "is_reference": bool(record.get("method", {}).get("is_reference", False)),
    }
    trace = {"created_at": record.get("created_at"), "code": _code(record)}
    empty = {"metric": None, "value": math.nan, "std": math.nan, "card_fingerprint": None}
    if record["status"] != "ok":
        failure = record.get("failure") or {}
        return [{**base, **empty, "status": record["status"], "reason": failure.get("reason"), **trace}]
    outcomes = record.get("metrics") or {}
    if not outcomes:
        return [{**base, **empty, "status": record["status"], "reason": "the record holds no metric outcomes", **trace}]
    rows = []
    for name, outcome in outcomes.items():
        status = outcome.get("status")
        spread = next((outcome[k] for k in STD_KEYS if k in outcome), None)
        rows.append(
            {
                **base,
                "metric": name,
                "value": _number(outcome.get("value")) if status == "ok" else math.nan,
                "std": _number(spread),
                "status": status,
                "reason": outcome.get("reason") or outcome.get("error"),
                "card_fingerprint": card_fingerprint(outcome.get("card") or {}),
                **trace,
            }
        )
    return rows


def _resolve(registry: Registry, names: str | Iterable[str]) -> list[str]:
    """Validated registry keys of a comma-separated string or a list of names (raises `UnknownNameError`)."""
    return registry.resolve(names if isinstance(names, str) else ",".join(names))


def export_frame(
    store: ResultStore | str | Path,
    methods: str | Iterable[str] | None = None,
    metrics: str | Iterable[str] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """(one row per (run, metric) of every readable record, messages naming the unreadable records).

    `methods` and `metrics` (comma-separated or lists of registered names, or `all`) keep only
    those rows; unknown names raise `UnknownNameError` listing the valid ones.
    """
    if not isinstance(store, ResultStore):
        store = ResultStore(store)
    method_keep = metric_keep = None
    if methods is not None:
        method_keep = set(_resolve(METHODS, methods))
    if metrics is not None:
        metric_keep = set(_resolve(METRICS, metrics))
    errors: list[str] = []
    rows = []
    for record in store.records(errors):
        if method_keep is not None and record["key"]["method"] not in method_keep:
            continue
        rows.extend(
            row
            for row in record_rows(record)
            if metric_keep is None or row["metric"] is None or row["metric"] in metric_keep
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame = frame.astype(
        {"seed": "int64", "train_seed": "int64", "is_reference": "bool", "value": "float64", "std": "float64"}
    )
    return frame, errors


def check_format(fmt: str, out: Path | None) -> None:
    """Raise `UnknownNameError` for an unknown format, `ExportError` for parquet without a file."""
    if fmt not in FORMATS:
        raise UnknownNameError("format", fmt, list(FORMATS))
    if fmt == "parquet" and out is None:
        raise ExportError("--format parquet writes a binary file: give it --out FILE")


def write_frame(frame: pd.DataFrame, fmt: str, out: Path | None = None) -> str | None:
    """Write `frame` to `out` in `fmt`; without `out`, return the csv or jsonl text instead."""
    check_format(fmt, out)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        return frame.to_csv(out, index=False)
    if fmt == "jsonl":
        # json.dumps writes the shortest repr that round-trips each float (pandas' writer keeps at most 15 decimals).
        rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        text = "".join(json.dumps(row) + "\n" for row in rows)
        if out is None:
            return text
        out.write_text(text)
        return None
    try:
        frame.to_parquet(out, index=False)
    except ImportError as exc:
        raise ParquetEngineMissing("--format parquet needs pyarrow: pip install pyarrow") from exc
    return None
