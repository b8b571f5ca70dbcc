"""Helpers shared by the tests (named so it cannot clash with torch-fidelity's top-level `tests` package)."""

from __future__ import annotations

import numpy as np


def write_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file, independently of the project's reader."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
