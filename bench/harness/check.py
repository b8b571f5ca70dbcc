"""Regression checks for CI: compare stored results with a committed baseline file.

A baseline (schema 2) is JSON:

    {"schema": 2,
     "default_tolerance": {"absolute": 0.0, "relative": 0.1},
     "spread": {...},            # only with `bench baseline --spread-from`: how the tolerances were measured
     "entries": [{"split_id": "fashion-mnist/novel9-4shot.v1", "profile": "smoke", "method": "vae",
                  "metric": "mse", "mean": 0.061, "card": "3f2a9c1e", "seeds": [0, 1],
                  "tolerance": {"absolute": 0.005}}, ...]}

`card` is the metric card's fingerprint (`bench.harness.leaderboard.card_fingerprint`) and `seeds` the runs
whose values make `mean`: support draws, written `"<seed>-train<t>"` for a training seed t other than 0
(`bench.harness.store.run_id`). Each entry gets one verdict:

- ok / regression: the current results hold the same card and seed set, and their mean is worse
  than `mean` by at most / more than max(absolute, relative * |mean|) (lower for ↑ metrics, higher
  for ↓ metrics, either way for diagnostics);
- regression also when a seed of the entry now records an `error` or a failed run, and when there
  is no current value at all ("missing": a method that stopped running must not pass silently);
- not comparable: current values exist but were measured with another card or seed set (passes
  unless `strict`);
- skipped: a seed of the entry records `unavailable` (an optional part is absent on this machine).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.leaderboard import card_fingerprint
from bench.harness.store import ResultStore, RunId, parse_run_id, run_id, run_id_order
from bench.sdk.files import atomic_write_bytes
from metrics import METRICS

BASELINE_SCHEMA = 2
DEFAULT_TOLERANCE = {"absolute": 0.0, "relative": 0.1}
# Tolerances measured with `--spread-from` are this many times the largest difference between the
# two machines' means (absolute and relative, per metric): two machines are a small sample of the
# machines CI may run on, and a regression worth catching is larger than that.
SPREAD_SAFETY = 3.0


OK, REGRESSION, NOT_COMPARABLE, SKIPPED = "ok", "regression", "not comparable", "skipped"
ENTRY_FIELDS = ("split_id", "profile", "method", "metric", "mean", "card", "seeds")

Key = tuple[str, str, str, str]  # (split id, profile, method, metric)


class BaselineError(ValueError):
    """A baseline file that cannot be used (or cannot be written); the message says what is wrong."""


@dataclass(frozen=True)
class CheckRow:
    split_id: str
    profile: str
    method: str
    metric: str
    baseline: float
    current: float | None
    tolerance: float
    status: str  # OK, REGRESSION, NOT_COMPARABLE or SKIPPED
    reason: str

    @property
    def regressed(self) -> bool:
        return self.status == REGRESSION


@dataclass
class _Observed:
    """What the stored records hold for one (split id, profile, method, metric)."""

    values: dict[RunId, tuple[str, float]] = field(default_factory=dict)  # run -> (card fingerprint, value)
    other: dict[RunId, tuple[str, str]] = field(default_factory=dict)  # run -> (status, reason or error)

    def groups(self) -> dict[str, tuple[list[RunId], float]]:
        """Card fingerprint -> (sorted runs, mean of their values)."""
        by_card: dict[str, dict[RunId, float]] = {}
        for run, (card, value) in self.values.items():
            by_card.setdefault(card, {})[run] = value
        return {
            card: (sorted(values, key=run_id_order), math.fsum(values.values()) / len(values))
            for card, values in by_card.items()
        }


def _observations(
    store: ResultStore, errors: list[str] | None = None
) -> tuple[dict[Key, _Observed], dict[tuple[str, str, str], dict[RunId, str]]]:
    """Per key, the outcomes of every stored run; and per (split id, profile, method), the failed runs. Unreadable
    records are reported in `errors`."""
    observed: dict[Key, _Observed] = {}
    failed: dict[tuple[str, str, str], dict[RunId, str]] = {}
    for record in store.records(errors):
        key = record["key"]
        run = (key["split_id"], key["profile"], key["method"])
        seed = run_id(key)
        if record.get("status") != "ok":
            failed.setdefault(run, {})[seed] = record.get("failure", {}).get("reason", record.get("status", "?"))
            continue
        for name, outcome in record.get("metrics", {}).items():
            obs = observed.setdefault((*run, name), _Observed())
            status = outcome.get("status")
            if status == "ok" and outcome.get("value") is not None:
                obs.values[seed] = (card_fingerprint(outcome.get("card", {})), float(outcome["value"]))
            else:
                obs.other[seed] = (
                    status,
                    str(outcome.get("error") if status == "error" else outcome.get("reason", "")),
                )
    return observed, failed


def current_entries(store: ResultStore, profile: str | None = None) -> list[dict]:
    """One entry per (split id, profile, method, metric, card) with a value: its seeds and mean."""
    observed, _ = _observations(store)
    return [
        {"split_id": s, "profile": p, "method": m, "metric": metric, "mean": mean, "card": card, "seeds": seeds}
        for (s, p, m, metric), obs in sorted(observed.items())
        if profile is None or p == profile
        for card, (seeds, mean) in sorted(obs.groups().items())
    ]


def load_baseline(path: Path) -> dict:
    try:
        baseline = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise BaselineError(f"{path}: no such baseline file (write one with `bench baseline --out {path}`)") from exc
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(baseline, dict) or not isinstance(baseline.get("entries"), list):
        raise BaselineError(f"{path}: not a baseline file (needs 'schema': {BASELINE_SCHEMA} and an 'entries' list)")
    schema = baseline.get("schema")
    if isinstance(schema, int) and schema < BASELINE_SCHEMA:
        raise BaselineError(
            f"{path}: baseline schema {schema} is older than this bench's schema {BASELINE_SCHEMA} (its entries lack the "
            f"card fingerprint and seed set); regenerate it with `bench baseline --out {path} --results-dir DIR`"
        )
    if schema != BASELINE_SCHEMA:
        raise BaselineError(f"{path}: baseline schema {schema!r} is not this bench's schema {BASELINE_SCHEMA}")
    for i, entry in enumerate(baseline["entries"]):
        missing = [f for f in ENTRY_FIELDS if f not in entry]
        if missing:
            raise BaselineError(f"{path}: entry {i} lacks {missing}")
    return baseline


def _seeds(seeds) -> str:
    return ", ".join(str(s) for s in seeds)


def _judge(entry: dict, obs: _Observed, failed: dict[RunId, str], tolerance: float) -> tuple[str, float | None, str]:
    """(status, current mean or None, reason) of one baseline entry."""
    seeds = sorted((parse_run_id(s) for s in entry["seeds"]), key=run_id_order)
    for wanted, verdict, what in (("unavailable", SKIPPED, "unavailable"), ("error", REGRESSION, "error")):
        hit = [s for s in seeds if obs.other.get(s, ("",))[0] == wanted]
        if hit:
            return verdict, None, f"{what} on seed {hit[0]}: {obs.other[hit[0]][1]}"
    hit = [s for s in seeds if s in failed]
    if hit:
        return REGRESSION, None, f"missing: the seed {hit[0]} run failed ({failed[hit[0]]})"
    groups = obs.groups()
    if not groups:
        not_applicable = [reason for status, reason in obs.other.values() if status == "not_applicable"]
        return (
            REGRESSION,
            None,
            f"missing: not applicable now ({not_applicable[0]})" if not_applicable else "missing: no current result",
        )

    if entry["card"] in groups:
        current_seeds, value = groups[entry["card"]]
        if current_seeds != seeds:
            missing = sorted(set(seeds) - set(current_seeds), key=run_id_order)
            extra = sorted(set(current_seeds) - set(seeds), key=run_id_order)
            parts = ([f"seeds {_seeds(missing)} missing"] if missing else []) + (
                [f"seeds {_seeds(extra)} extra"] if extra else []
            )
            return NOT_COMPARABLE, value, f"baseline seeds {_seeds(seeds)}: {', '.join(parts)}"
    else:
        current = "; ".join(f"{card} (seeds {_seeds(s)})" for card, (s, _) in sorted(groups.items()))
        value = next(iter(groups.values()))[1] if len(groups) == 1 else None
        return (
            NOT_COMPARABLE,
            value,
            f"card differs: baseline {entry['card']} (seeds {_seeds(seeds)}), current {current}",
        )

    expected = float(entry["mean"])
    try:
        direction = METRICS.get(entry["metric"]).higher_is_better
    except KeyError:
        direction = None
    if direction is True:
        regressed, reason = value < expected - tolerance, f"fell below {expected - tolerance:.4g}"
    elif direction is False:
        regressed, reason = value > expected + tolerance, f"rose above {expected + tolerance:.4g}"
    else:
        regressed, reason = abs(value - expected) > tolerance, f"moved more than {tolerance:.4g}"
    return (REGRESSION, value, reason) if regressed else (OK, value, "ok")


def check(store: ResultStore, baseline_path: Path, errors: list[str] | None = None) -> list[CheckRow]:
    """One row per baseline entry; records that cannot be read are reported in `errors` (the CLI fails on them:
    a damaged record must not pass as a missing or skipped run)."""
    baseline = load_baseline(baseline_path)
    observed, failed = _observations(store, errors)
    default = {**DEFAULT_TOLERANCE, **baseline.get("default_tolerance", {})}
    rows = []
    for entry in baseline["entries"]:
        tol_spec = {**default, **entry.get("tolerance", {})}
        expected = float(entry["mean"])
        tolerance = max(float(tol_spec["absolute"]), float(tol_spec["relative"]) * abs(expected))
        key = (entry["split_id"], entry["profile"], entry["method"], entry["metric"])
        status, value, reason = _judge(entry, observed.get(key, _Observed()), failed.get(key[:3], {}), tolerance)
        rows.append(CheckRow(*key, expected, value, tolerance, status, reason))
    return rows


def failing(rows: list[CheckRow], strict: bool = False) -> list[CheckRow]:
    """The rows that fail the check: regressions, and with `strict` the not comparable ones too (never skipped ones)."""
    return [r for r in rows if r.status == REGRESSION or (strict and r.status == NOT_COMPARABLE)]


def summary(rows: list[CheckRow]) -> str:
    """`N checked, R regressions, K not comparable, S skipped` (N counts every baseline entry)."""
    count = {status: sum(r.status == status for r in rows) for status in (REGRESSION, NOT_COMPARABLE, SKIPPED)}
    return (
        f"{len(rows)} checked, {count[REGRESSION]} regressions, {count[NOT_COMPARABLE]} not comparable, "
        f"{count[SKIPPED]} skipped"
    )


def metric_tolerance(metric: str) -> dict[str, float]:
    """The tolerance a metric declares (`Metric.tolerance`) as baseline keys; {} when it declares none or is
    no longer registered."""
    try:
        declared = METRICS.get(metric).tolerance
    except KeyError:
        return {}
    return declared.as_dict() if declared is not None else {}


def _metric_default(metric: str, relative: float, absolute: float) -> dict:
    return {"absolute": absolute, "relative": relative, **metric_tolerance(metric)}


def _environments(store: ResultStore, profile: str | None) -> list[str]:
    """The distinct machines (platform, torch, threads, instruction set) a store's runs were measured on."""
    seen = set()
    for record in store.records():
        if profile is None or record["key"]["profile"] == profile:
            env = record.get("environment", {})
            described = (
                f"{env.get('platform', '?')}, torch {env.get('torch', '?')}, {env.get('torch_threads', '?')} threads"
            )
            if "cpu_capability" in env:  # records from before it was recorded lack it
                described += f", {env['cpu_capability']}"
            seen.add(described)
    return sorted(seen)


def measure_spread(entries: list[dict], other: list[dict], absolute_floor=lambda metric: 0.0) -> dict[str, dict]:
    """Per metric: the largest |mean − other mean| and relative difference (to |mean|) over the entries that
    `other` holds with the same key, card and seeds, and how many entries that was.

    The relative difference is taken only where the absolute difference exceeds `absolute_floor(metric)`
    (the metric's default absolute tolerance): a difference the absolute band already covers says nothing
    about relative scale, and near 0 (a precision of 0.010 against 0.005, a copy's feature distance of 3e-6
    against 2e-6) it would make the relative band meaninglessly wide."""
    index = {
        (e["split_id"], e["profile"], e["method"], e["metric"], e["card"], tuple(e["seeds"])): e["mean"] for e in other
    }
    spread: dict[str, dict] = {}
    for e in entries:
        s = spread.setdefault(e["metric"], {"absolute": 0.0, "relative": 0.0, "n_entries": 0})
        match = index.get((e["split_id"], e["profile"], e["method"], e["metric"], e["card"], tuple(e["seeds"])))
        if match is None:
            continue
        diff = abs(e["mean"] - match)
        s["absolute"] = max(s["absolute"], diff)
        if e["mean"] != 0 and diff > absolute_floor(e["metric"]):
            s["relative"] = max(s["relative"], diff / abs(e["mean"]))
        s["n_entries"] += 1
    return spread


def make_baseline(
    store: ResultStore,
    relative: float,
    absolute: float,
    profile: str | None = None,
    spread_from: ResultStore | None = None,
    spread_note: str | None = None,
) -> dict:
    """The current means as a baseline (optionally one profile only).

    Without `spread_from`, entries of the metrics that declare a tolerance (`Metric.tolerance`) carry it
    (the defaults still apply to the kinds it leaves out). With it, every entry carries its metric's tolerance:
    max(the default, SPREAD_SAFETY × the largest difference to `spread_from`'s means), absolute and
    relative separately, and the baseline's `spread` section records what was measured.
    """
    entries = current_entries(store, profile)
    baseline: dict = {"schema": BASELINE_SCHEMA, "default_tolerance": {"absolute": absolute, "relative": relative}}
    if spread_from is None:
        for e in entries:
            if tolerance := metric_tolerance(e["metric"]):
                e["tolerance"] = tolerance
    elif entries:
        spread = measure_spread(
            entries,
            current_entries(spread_from, profile),
            lambda metric: _metric_default(metric, relative, absolute)["absolute"],
        )
        if not any(s["n_entries"] for s in spread.values()):
            raise BaselineError(
                f"{spread_from.root} holds no entry with the same split, profile, method, metric, card and seeds as "
                f"{store.root}: nothing to measure the spread on (run the same sweep there)"
            )
        metrics = {}
        for metric, s in sorted(spread.items()):
            default = _metric_default(metric, relative, absolute)
            if s["n_entries"]:
                tolerance = {kind: max(default[kind], SPREAD_SAFETY * s[kind]) for kind in ("absolute", "relative")}
                metrics[metric] = {
                    "spread": {"absolute": s["absolute"], "relative": s["relative"]},
                    "n_entries": s["n_entries"],
                    "tolerance": tolerance,
                }
            else:
                tolerance = {kind: default[kind] for kind in ("absolute", "relative")}
                metrics[metric] = {"spread": None, "n_entries": 0, "tolerance": tolerance}
        for e in entries:
            e["tolerance"] = metrics[e["metric"]]["tolerance"]
        baseline["spread"] = {
            "safety": SPREAD_SAFETY,
            "results_dir": str(store.root),
            "spread_from": str(spread_from.root),
            "note": spread_note,
            "environments": {
                "results_dir": _environments(store, profile),
                "spread_from": _environments(spread_from, profile),
            },
            "metrics": metrics,
        }
    baseline["entries"] = entries
    return baseline


def save_baseline(baseline: dict, path: Path) -> None:
    atomic_write_bytes(Path(path), (json.dumps(baseline, indent=2) + "\n").encode())


def write_baseline(
    store: ResultStore,
    path: Path,
    relative: float,
    absolute: float,
    profile: str | None = None,
    spread_from: ResultStore | None = None,
    spread_note: str | None = None,
) -> int:
    """Write `make_baseline(...)` to `path`; return the entry count."""
    baseline = make_baseline(store, relative, absolute, profile, spread_from, spread_note)
    save_baseline(baseline, path)
    return len(baseline["entries"])
