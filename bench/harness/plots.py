"""Plots saved with a run: loss curves, and the latent space of methods that embed images.

Loss curves: one panel per training phase of a run, drawn from the curves in its training log.

A method that records `training_log[<phase>]["curve"]` (`{"step": [...], <term>: [...]}`, e.g.
from `methods._gan.alternate`) gets a PNG beside its sample grid; terms of one player share a
panel's axis, so a discriminator that wins (its loss falling to 0 while the generator's climbs)
is visible at a glance.

Latent space (methods with the `embed` capability): the 2-D principal-component projection of
the embeddings of base-class images, the support images and held-out query images of the novel
class, coloured by class, like the latent-space figures of the cross-aligned VQ-VAE slides.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from bench.sdk.files import atomic_write_bytes


def curves_of(training_log: dict) -> dict[str, dict[str, list[float]]]:
    """{phase: curve} for every phase of the log that recorded a curve."""
    return {
        phase: entry["curve"]
        for phase, entry in training_log.items()
        if isinstance(entry, dict) and isinstance(entry.get("curve"), dict) and entry["curve"].get("step")
    }


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
    save_figure(figure, path)
    return True


# -- latent space ------------------------------------------------------------------------------
# Points per base class and query images embedded for the plot: enough to show a cluster's shape,
# few enough that embedding them costs seconds.
LATENT_PLOT_BASE_PER_CLASS = 100
LATENT_PLOT_QUERIES = 200


def project_2d(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal-component projection of (n, d) points to (n, 2), and the variance fraction of each axis."""
    centred = points.double() - points.double().mean(0)
    if centred.shape[1] < 2:
        centred = torch.cat([centred, torch.zeros(centred.shape[0], 2 - centred.shape[1], dtype=centred.dtype)], 1)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = singular.pow(2)
    explained = variance[:2] / variance.sum().clamp_min(1e-300)
    return (centred @ vh[:2].T).float(), explained.float()


def save_latent_projection(path: Path, groups: list[tuple[str, str, torch.Tensor]], title: str) -> None:
    """Scatter the 2-D principal-component projection of embedded images, one colour per class.

    `groups`: (label, role, embeddings) with role `base` (base-class images: small dots),
    `support` (the k support images: large stars) or `query` (held-out images of the novel class:
    squares). The projection is fitted on all points together.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    projected, explained = project_2d(torch.cat([points for _, _, points in groups]))
    style = {
        "base": dict(marker="o", s=6, alpha=0.35),
        "support": dict(marker="*", s=160, edgecolors="black", linewidths=0.6),
        "query": dict(marker="s", s=14, alpha=0.7),
    }
    figure, axis = plt.subplots(figsize=(6.4, 5.2))
    classes = list(dict.fromkeys(label.split(" (")[0] for label, _, _ in groups))
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    start = 0
    for label, role, points in groups:
        stop = start + len(points)
        colour = colours(classes.index(label.split(" (")[0]) % colours.N)
        axis.scatter(projected[start:stop, 0], projected[start:stop, 1], color=colour, label=label, **style[role])
        start = stop
    axis.set_xlabel(f"PC 1 ({100 * float(explained[0]):.0f}% of variance)")
    axis.set_ylabel(f"PC 2 ({100 * float(explained[1]):.0f}% of variance)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=0.8)
    axis.set_title(title, fontsize=9)
    save_figure(figure, path)


def save_figure(figure, path: Path, dpi: int = 90) -> None:
    """Write the figure as a PNG atomically (a killed run leaves no partial file) and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
