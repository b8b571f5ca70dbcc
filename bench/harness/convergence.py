"""Where a training curve has plateaued: the measurement behind each method's `standard` budget.

Every gradient-trained phase records its loss curve in the run record (`training_log[<phase>]["curve"]`,
block means of at most 200 points, `bench.sdk.training.Curve`). A phase's curve is read as follows:

1. smooth it with a running median over `SMOOTHING` of its points (GAN losses and Reptile's
   episodes are noisy from one block to the next);
2. its final level is the mean of the smoothed curve's last tenth, and its travel the largest
   distance of any smoothed point from that level;
3. the plateau is the first step from which the smoothed curve stays within `TOLERANCE` of the
   travel from the final level until the end;
4. the phase has plateaued within its budget if that step is at most `FLAT_FRACTION` of the steps:
   the last quarter of the budget then moved the curve by less than `TOLERANCE` of what the whole
   budget did. Otherwise it was still moving when the budget ended.

A plateaued loss says the optimiser has stopped improving its own objective, not that samples are
good: an adversarial loss can sit at equilibrium while samples drift. The grids and the metrics say
the rest. `bench curve training` applies the rule to stored runs and plots each curve with its
plateau marked.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib
import numpy as np

from bench.harness.environment import utc_now
from bench.harness.plots import curves_of, save_figure
from bench.harness.store import ResultStore, RunKey
from bench.sdk.files import atomic_write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the file backend

SMOOTHING = 0.1
TOLERANCE = 0.05
FLAT_FRACTION = 0.75
RULE = (
    f"running median over {SMOOTHING:.0%} of the points; plateau: the first step from which the smoothed curve "
    f"stays within {TOLERANCE:.0%} of its travel from its final level (mean of the last tenth); plateaued if "
    f"that step is at most {FLAT_FRACTION:.0%} of the budget"
)


@dataclass(frozen=True)
class Plateau:
    steps: int  # the phase's budget (last step of the curve)
    plateau_step: int  # first step from which the smoothed curve stays within the tolerance band
    plateaued: bool  # plateau_step <= FLAT_FRACTION * steps
    final: float  # the final level
    travel: float  # largest distance of the smoothed curve from the final level


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Median of each point's centred window, `window` rounded up to an odd count and shrunk symmetrically at the
    ends (the first and last points are their own medians). Padding with the end values instead would make the
    last point most of its neighbours' windows, and the smoothed curve would end on that one block's noise;
    a symmetric window keeps a monotone curve unchanged."""
    values = np.asarray(values, dtype=float)
    half = max(0, window // 2)
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(values, half, constant_values=np.nan), 2 * half + 1)
    index = np.arange(len(values))
    reach = np.minimum(half, np.minimum(index, len(values) - 1 - index))  # the half-width each point can have
    offsets = np.abs(np.arange(-half, half + 1))
    return np.nanmedian(np.where(offsets[None, :] <= reach[:, None], windows, np.nan), axis=1)


def smoothed(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return running_median(values, max(1, round(SMOOTHING * len(values))))


def plateau(steps, values) -> Plateau:
    """The plateau of one curve (see the module docstring); `steps` increasing, `values` finite."""
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=float)
    if len(steps) != len(values) or len(values) < 2:
        raise ValueError(
            f"a curve needs at least 2 points and as many steps as values, got {len(steps)}, {len(values)}"
        )
    if not np.isfinite(values).all():
        raise ValueError("the curve has non-finite values")
    smooth = smoothed(values)
    final = float(smooth[-max(1, len(smooth) // 10) :].mean())
    distance = np.abs(smooth - final)
    travel = float(distance.max())
    outside = np.nonzero(distance > TOLERANCE * travel)[0]
    first_inside = 0 if len(outside) == 0 else min(int(outside[-1]) + 1, len(steps) - 1)
    plateau_step = int(steps[first_inside])
    return Plateau(int(steps[-1]), plateau_step, plateau_step <= FLAT_FRACTION * int(steps[-1]), final, travel)


# The objectives a phase may log: a likelihood-style `loss`, or a GAN's two players (whose pair at equilibrium is
# the plateau: the generator's loss alone can keep rising while samples improve).
LOSS_TERMS = ("loss", "d_loss", "g_loss")


def training_plateaus(store: ResultStore, keys: list[RunKey], terms: tuple[str, ...] = LOSS_TERMS) -> dict[str, dict]:
    """{method: {phase: {term: {plateau fields, "curve": (steps, values)}}}} for every logged term among `terms`
    of every phase of each run."""
    result: dict[str, dict] = {}
    for key in keys:
        record = store.load(key)
        if record is None:
            raise FileNotFoundError(f"no stored run {key.relative}")
        phases = {}
        for phase, curve in curves_of(record.get("training_log", {})).items():
            read = {}
            for term in terms:
                if term in curve and len(curve["step"]) >= 2:
                    found = plateau(curve["step"], curve[term])
                    read[term] = {**asdict(found), "curve": {"step": curve["step"], term: curve[term]}}
            if read:
                phases[phase] = read
        result[key.method] = phases
    return result


def write_training_curves(result: dict[str, dict], output: Path, description: dict) -> tuple[Path, Path]:
    """OUT.json (plateaus, rule, how measured) and OUT.png (each phase's curve, smoothed, plateau marked)."""
    json_path, png_path = output.with_suffix(".json"), output.with_suffix(".png")
    summary = {
        "rule": RULE,
        "measured": utc_now(),
        **description,
        "methods": {
            method: {
                phase: {term: {k: v for k, v in entry.items() if k != "curve"} for term, entry in terms.items()}
                for phase, terms in phases.items()
            }
            for method, phases in result.items()
        },
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(json_path, (json.dumps(summary, indent=1) + "\n").encode())
    panels = [
        (method, phase, term, entry)
        for method, phases in result.items()
        for phase, terms in phases.items()
        for term, entry in terms.items()
    ]
    columns = min(4, max(1, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), squeeze=False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, (method, phase, term, entry) in zip(axes.flat, panels, strict=False):
        steps, values = entry["curve"]["step"], entry["curve"][term]
        axis.plot(steps, values, color="0.75", linewidth=0.8, label=term)
        axis.plot(steps, smoothed(values), color="C0", linewidth=1.2, label="smoothed")
        axis.axvline(entry["plateau_step"], color="C3" if entry["plateaued"] else "C1", linestyle="--", linewidth=1)
        verdict = "plateau" if entry["plateaued"] else "still moving"
        axis.set_title(
            f"{method} · {phase} · {term}\n{verdict} at {entry['plateau_step']:,} of {entry['steps']:,}", fontsize=8
        )
        axis.tick_params(labelsize=7)
    save_figure(figure, png_path, dpi=110)
    return json_path, png_path
