"""Loss curves: one panel per training phase of a run, drawn from the curves in its training log.

A method that records `training_log[<phase>]["curve"]` (`{"step": [...], <term>: [...]}`, e.g.
from `methods._gan.alternate`) gets a PNG beside its sample grid; terms of one player share a
panel's axis, so a discriminator that wins (its loss falling to 0 while the generator's climbs)
is visible at a glance.
"""

from __future__ import annotations

import io
from pathlib import Path

from bench.store import atomic_write_bytes


def curves_of(training_log: dict) -> dict[str, dict[str, list[float]]]:
    """{phase: curve} for every phase of the log that recorded a curve."""
    return {phase: entry["curve"] for phase, entry in training_log.items()
            if isinstance(entry, dict) and isinstance(entry.get("curve"), dict) and entry["curve"].get("step")}


def save_loss_curves(path: Path, training_log: dict, title: str) -> bool:
    """Draw the log's curves into `path`; returns False (writing nothing) when the log has none."""
    curves = curves_of(training_log)
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for axis, (phase, curve) in zip(axes[0], curves.items()):
        for term, values in curve.items():
            if term != "step":
                axis.plot(curve["step"], values, label=term, linewidth=1)
        axis.set_title(phase)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return True
