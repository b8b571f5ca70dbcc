"""Fitted models stored beside a run's samples, so that model metrics (backtracking, NLL) can be rescored.

A checkpoint is the fitted method object as `torch.save` pickles it: methods build their networks
from the task during `fit`, so no generic weights-only format can rebuild them. Unpickling an
arbitrary pickle runs code, so loading is guarded twice:

- the file must be the one the harness wrote: its sha256 must equal the digest its run record (or
  pretraining entry) stored; a file that differs is refused;
- it is unpickled with torch's weights-only unpickler, which calls nothing but the globals it is
  given. Those are read from the file first and must each be a class of the benchmark's code
  (`methods`, `bench.sdk`), of a registered method's own package (plugins), or of torch's modules
  and optimisers; a file naming anything else (`os.system`, `subprocess.Popen`, a function) is
  refused with that name before any of it runs.

Optimisers are stored by their state (`_restore_optimizer`): torch's own pickling keeps their state
in a `defaultdict`, which the weights-only unpickler cannot fill. Checkpoints are local artefacts
and are not committed.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import importlib
import io
import pickle
from pathlib import Path

import torch

from bench.sdk.files import atomic_write_bytes
from bench.sdk.progress import NullReporter
from methods import METHODS

# Packages whose classes a checkpoint may construct (besides registered methods' own packages).
TRUSTED_PACKAGES = ("methods", "bench.sdk", "torch.nn.modules", "torch.nn.parameter", "torch.optim")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, is not the file its run record names, or names code it may not run."""


def _restore_optimizer(cls: type, state: dict) -> torch.optim.Optimizer:
    """An optimiser from its pickled `__getstate__` (the inverse of `_CheckpointPickler.reducer_override`)."""
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise pickle.UnpicklingError(f"{cls!r} is not an optimiser")
    optimizer = cls.__new__(cls)
    optimizer.__setstate__({**state, "state": collections.defaultdict(dict, state["state"])})
    return optimizer


class _CheckpointPickler(pickle.Pickler):
    """Pickles optimisers with a plain-dict state, so that the weights-only unpickler can rebuild them."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.optim.Optimizer):
            state = obj.__getstate__()
            return _restore_optimizer, (type(obj), {**state, "state": dict(state["state"])})
        return NotImplemented


class _PickleModule:
    """What `torch.save(pickle_module=...)` needs: a module-like object with the pickler to use."""

    Pickler = _CheckpointPickler


def save_checkpoint(path: Path, method) -> str:
    """Write the fitted `method` atomically; return the file's sha256 (stored in the run record).

    The wall-clock phase timings (in the record already) are left out, so the same fit writes the same bytes."""
    stored = copy.copy(method)
    stored.reporter, stored.timings = NullReporter(), {}
    buffer = io.BytesIO()
    torch.save(stored, buffer, pickle_module=_PickleModule)
    atomic_write_bytes(path, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _trusted_packages() -> set[str]:
    """The project's packages and the top-level package of every registered method (plugins included)."""
    return set(TRUSTED_PACKAGES) | {cls.__module__.split(".")[0] for _, cls in METHODS.items()}


def _inside(module: str, packages: set[str]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def _allowed_globals(path: Path, blob: bytes) -> list:
    """The objects the file's globals name, each checked to be a trusted class before it is imported."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(blob))
    except Exception as exc:  # noqa: BLE001 - a file the scanner cannot read is not a checkpoint it can vouch for
        raise CheckpointError(f"checkpoint {path} is not a readable torch file ({exc})") from exc
    packages, allowed = _trusted_packages(), []
    for name in sorted(names):
        module, _, attribute = name.rpartition(".")
        if name == f"{__name__}._restore_optimizer":
            allowed.append(_restore_optimizer)
            continue
        if not _inside(module, packages):
            raise CheckpointError(
                f"checkpoint {path} names {name}, which is not a class of the benchmark's methods, its SDK "
                f"or torch's modules; it is refused without running it (trusted packages: {', '.join(sorted(packages))})"
            )
        try:
            found = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:  # the pickle names a class the code no longer has
            raise CheckpointError(
                f"checkpoint {path} was written by code whose classes have since moved or changed ({exc}); "
                "re-run the row to store a checkpoint this code can load"
            ) from exc
        if not isinstance(found, type):
            raise CheckpointError(f"checkpoint {path} names {name}, which is not a class; it is refused")
        allowed.append(found)
    return allowed


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
    with torch.serialization.safe_globals(_allowed_globals(path, blob)):
        try:
            method = torch.load(io.BytesIO(blob), map_location=device, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"checkpoint {path} could not be unpickled safely: {exc}") from exc
    method.device = torch.device(device)
    return method
