"""Pretrained weights that a library downloads into torch's hub cache (InceptionV3 for FID, AlexNet for LPIPS).

Users who are online get the library's own download; offline machines get one clear error
naming the file and where to put it.
"""

from __future__ import annotations

import socket
import urllib.error
from collections.abc import Callable
from pathlib import Path

import torch

from metrics import MissingOptionalPart

DOWNLOAD_TIMEOUT_SECONDS = 60


def hub_checkpoint(filename: str) -> Path:
    """Where torch.hub.load_state_dict_from_url keeps `filename` (TORCH_HOME sets the root)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def download_weights(expected: Path, what: str, fetch: Callable[[], object]) -> None:
    """Run `fetch` (the library's own download into the hub cache); on failure, name the missing file."""
    previous = socket.getdefaulttimeout()
    # A network that drops packets instead of refusing them would otherwise hang the download.
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        fetch()
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise MissingOptionalPart(
            f"{what} not found at {expected} and the download failed ({type(exc).__name__}: {exc}); "
            f"on an offline machine, copy {expected.name} into {expected.parent} (TORCH_HOME sets the root)"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    if not expected.is_file():
        raise MissingOptionalPart(f"{what}: the download did not produce {expected}")
