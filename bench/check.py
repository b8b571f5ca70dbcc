"""Regression checks for CI: compare stored results with a committed baseline file.

A baseline is JSON:

    {"schema": 1,
     "default_tolerance": {"absolute": 0.0, "relative": 0.1},
     "entries": [{"split_id": "fashion-mnist/novel9-4shot.v1", "profile": "smoke", "method": "vae",
                  "metric": "mse", "mean": 0.061, "tolerance": {"absolute": 0.005}}, ...]}

An entry regresses when the current mean over successful seeds is worse than `mean` by more
than its tolerance, max(absolute, relative * |mean|): lower for ↑ metrics, higher for ↓
metrics, either way for diagnostics. A baseline entry with no current result is a regression
too (a method that stopped running must not pass silently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.leaderboard import scores_frame
from bench.store import ResultStore, atomic_write_bytes
from metrics import METRICS

BASELINE_SCHEMA = 1
DEFAULT_TOLERANCE = {"absolute": 0.0, "relative": 0.1}


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class CheckRow:
    split_id: str
    profile: str
    method: str
    metric: str
    baseline: float
    current: float | None
    tolerance: float
    regressed: bool
    reason: str


def _current_means(store: ResultStore) -> dict[tuple[str, str, str, str], float]:
    frame = scores_frame(list(store.records()))
    if frame.empty:
        return {}
    ok = frame[(frame["status"] == "ok") & frame["metric"].notna()]
    means = ok.groupby(["split_id", "profile", "method", "metric"])["value"].mean()
    return {key: float(value) for key, value in means.items()}


def load_baseline(path: Path) -> dict:
    try:
        baseline = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise BaselineError(f"{path}: no such baseline file (write one with `bench baseline --out {path}`)") from exc
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(baseline, dict) or baseline.get("schema") != BASELINE_SCHEMA or not isinstance(baseline.get("entries"), list):
        raise BaselineError(f"{path}: not a baseline file (needs 'schema': {BASELINE_SCHEMA} and an 'entries' list)")
    for i, entry in enumerate(baseline["entries"]):
        missing = [f for f in ("split_id", "profile", "method", "metric", "mean") if f not in entry]
        if missing:
            raise BaselineError(f"{path}: entry {i} lacks {missing}")
    return baseline


def check(store: ResultStore, baseline_path: Path) -> list[CheckRow]:
    baseline = load_baseline(baseline_path)
    current = _current_means(store)
    default = {**DEFAULT_TOLERANCE, **baseline.get("default_tolerance", {})}
    rows = []
    for entry in baseline["entries"]:
        tol_spec = {**default, **entry.get("tolerance", {})}
        expected = float(entry["mean"])
        tolerance = max(float(tol_spec["absolute"]), float(tol_spec["relative"]) * abs(expected))
        key = (entry["split_id"], entry["profile"], entry["method"], entry["metric"])
        value = current.get(key)
        try:
            direction = METRICS.get(entry["metric"]).higher_is_better
        except KeyError:
            direction = None
        if value is None:
            regressed, reason = True, "no current result"
        elif direction is True:
            regressed, reason = value < expected - tolerance, f"fell below {expected - tolerance:.4g}"
        elif direction is False:
            regressed, reason = value > expected + tolerance, f"rose above {expected + tolerance:.4g}"
        else:
            regressed, reason = abs(value - expected) > tolerance, f"moved more than {tolerance:.4g}"
        rows.append(CheckRow(*key, expected, value, tolerance, regressed, reason if regressed else "ok"))
    return rows


# Per-metric absolute tolerances written into baselines, where a relative one says too little: fractions
# near 0 (a 10% relative band around 0.004 is noise-tight), KID's large values in small samples, and the
# nearest-support distances, which are exactly 0 for the copy reference rows.
METRIC_TOLERANCES = {
    **{name: {"absolute": 0.1} for name in ("precision", "recall", "density", "coverage", "class_consistency")},
    "kid": {"absolute": 500.0},
    **{name: {"absolute": 1e-6} for name in ("support_nn_mse", "support_nn_shift_mse", "support_nn_feat")},
}


def write_baseline(store: ResultStore, path: Path, relative: float, absolute: float, profile: str | None = None) -> int:
    """Write the current means as a baseline (optionally one profile only); return the entry count.

    Entries of the metrics in `METRIC_TOLERANCES` carry that absolute tolerance (the relative default still applies).
    """
    entries = [
        {"split_id": s, "profile": p, "method": m, "metric": metric, "mean": value,
         **({"tolerance": METRIC_TOLERANCES[metric]} if metric in METRIC_TOLERANCES else {})}
        for (s, p, m, metric), value in sorted(_current_means(store).items())
        if profile is None or p == profile
    ]
    baseline = {
        "schema": BASELINE_SCHEMA,
        "default_tolerance": {"absolute": absolute, "relative": relative},
        "entries": entries,
    }
    atomic_write_bytes(Path(path), (json.dumps(baseline, indent=2) + "\n").encode())
    return len(entries)
