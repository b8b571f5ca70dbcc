"""Sample grids: the support images in the top row, generated samples below, as one PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.store import atomic_write_bytes


def grid_image(support: torch.Tensor, samples: torch.Tensor, columns: int = 10, scale: int = 2, gap: int = 4) -> Image.Image:
    """Support images (first row, up to `columns`), a blank band, then `columns` x `columns` samples."""
    def tile(images: torch.Tensor, rows: int) -> np.ndarray:
        n, c, h, w = images.shape
        canvas = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, c), 255, dtype=np.uint8)
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(min(n, rows * columns)):
            r, col = divmod(i, columns)
            canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = pixels[i]
        return canvas

    top = tile(support[:columns], 1)
    bottom = tile(samples[: columns * columns], min(columns, -(-len(samples) // columns)))
    band = np.full((gap, top.shape[1], top.shape[2]), 255, dtype=np.uint8)
    band[gap // 2 - 1 : gap // 2 + 1] = 160  # a grey rule between support and samples
    canvas = np.concatenate([top, band, bottom])
    if canvas.shape[2] == 1:
        canvas = canvas[:, :, 0]
    image = Image.fromarray(canvas)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def save_grid(path: Path, support: torch.Tensor, samples: torch.Tensor) -> None:
    buffer = io.BytesIO()
    grid_image(support, samples).save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(path, buffer.getvalue())
