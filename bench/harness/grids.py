"""Sample grids: the support images in the top row, generated samples below, as one PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.sdk.files import atomic_write_bytes


def _tile(images: torch.Tensor, rows: int, columns: int) -> np.ndarray:
    """Up to rows x columns images on a white canvas with 1-pixel gaps, (H, W, C) uint8."""
    n, c, h, w = images.shape
    canvas = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, c), 255, dtype=np.uint8)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(min(n, rows * columns)):
        r, col = divmod(i, columns)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = pixels[i]
    return canvas


def _rule(length: int, channels: int, gap: int, vertical: bool = False) -> np.ndarray:
    """A white band of width `gap` with a grey line in its middle, separating support from samples."""
    band = np.full((gap, length, channels), 255, dtype=np.uint8)
    band[gap // 2 - 1 : gap // 2 + 1] = 160
    return band.transpose(1, 0, 2) if vertical else band


def _to_image(canvas: np.ndarray, scale: int) -> Image.Image:
    image = Image.fromarray(canvas[:, :, 0] if canvas.shape[2] == 1 else canvas)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def grid_image(
    support: torch.Tensor, samples: torch.Tensor, columns: int = 10, scale: int = 2, gap: int = 4
) -> Image.Image:
    """Support images (first row, up to `columns`), a grey rule, then `columns` x `columns` samples."""
    top = _tile(support[:columns], 1, columns)
    bottom = _tile(samples[: columns * columns], min(columns, -(-len(samples) // columns)), columns)
    return _to_image(np.concatenate([top, _rule(top.shape[1], top.shape[2], gap), bottom]), scale)


def task_grid_image(
    supports: list[torch.Tensor], samples: list[torch.Tensor], columns: int = 10, scale: int = 2, gap: int = 4
) -> Image.Image:
    """One row per task (e.g. per novel character): its support images, a grey rule, then up to `columns` samples."""
    shots = max(len(s) for s in supports)
    rows = []
    for support, task_samples in zip(supports, samples):
        left = _tile(support, 1, shots)
        right = _tile(task_samples[:columns], 1, columns)
        rows.append(np.concatenate([left, _rule(left.shape[0], left.shape[2], gap, vertical=True), right], axis=1))
    return _to_image(np.concatenate(rows), scale)


def save_task_grid(path: Path, supports: list[torch.Tensor], samples: list[torch.Tensor]) -> None:
    _save(path, task_grid_image(supports, samples))


def save_grid(path: Path, support: torch.Tensor, samples: torch.Tensor) -> None:
    _save(path, grid_image(support, samples))


def _save(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(path, buffer.getvalue())
