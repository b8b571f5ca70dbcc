"""Fitted models stored beside a run's samples, so that model metrics (backtracking, NLL) can be rescored.

A checkpoint is the fitted method object as `torch.save` pickles it: methods build their networks
from the task during `fit`, so no generic weights-only format can rebuild them. Unpickling can run
code, so a checkpoint is loaded only when the sha256 of the file equals the digest its run record
stored when the harness wrote it (`bench rescore` checks this); a file that differs is refused.
Checkpoints are local artefacts and are not committed.
"""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path

import torch

from bench.sdk.files import atomic_write_bytes
from bench.sdk.progress import NullReporter


class CheckpointError(RuntimeError):
    """A checkpoint is missing or is not the file its run record names."""


def save_checkpoint(path: Path, method) -> str:
    """Write the fitted `method` atomically; return the file's sha256 (stored in the run record).

    The wall-clock phase timings (in the record already) are left out, so the same fit writes the same bytes."""
    stored = copy.copy(method)
    stored.reporter, stored.timings = NullReporter(), {}
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def load_checkpoint(path: Path, sha256: str, device: str = "cpu"):
    """The method stored at `path`, after checking that the file is the one whose digest the record holds."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing")
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha256:
        raise CheckpointError(
            f"checkpoint {path} has sha256 {digest[:12]}…, not the {sha256[:12]}… its record names; "
            "it was not written by this run and is not loaded"
        )
    # weights_only=False is safe here only because the digest above ties the file to the harness's own write.
    try:
        method = torch.load(io.BytesIO(blob), map_location=device, weights_only=False)
    except (ImportError, AttributeError) as exc:  # the pickle names a class the code no longer has (moved, renamed)
        raise CheckpointError(
            f"checkpoint {path} was written by code whose classes have since moved or changed ({exc}); "
            "re-run the row to store a checkpoint this code can load"
        ) from exc
    method.device = torch.device(device)
    return method
