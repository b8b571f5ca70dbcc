"""Pretraining once: a transfer method's base-class phase, cached and shared by every run that would repeat it.

A method with the `transfer` capability fits in two phases (`bench.sdk.method.PretrainThenAdapt`):
`pretrain` on the base classes, then `adapt` to the support set. The first never sees the support
set, so it depends only on what `pretraining_key` hashes: the method (name, version, config, budget,
and the digest of the code it runs), the base set (the images' and labels' bytes and the task fields
a method may read besides the support set), the training seed, and what makes float arithmetic
reproducible (torch version, device type, thread count, the CPU instruction set torch dispatches to).
Every support draw at one training seed, every held-out task of an Omniglot task set, and every later
sweep at the same code shares one pretraining.

The harness enforces the independence rather than trusting it: `pretrain` is given the task with its
support set emptied and the support's identity removed from its `info` (`base_only`), so a method that
read the support set while pretraining would fail, not silently cache the wrong thing.

Entries live under `<cache>/pretrained/` as `<method>-<key>.pt` (the pretrained method object, pickled
as checkpoints are: `bench.harness.checkpoints`) with a `.json` beside it: the key's content and the
file's sha256, written after the file, so an entry without its `.json` (a killed write) is not read. A
file whose sha256 differs from its `.json`, or that names code a checkpoint may not run, is refused and
recomputed. Concurrent runs of one key (`--jobs`, cluster workers
sharing a cache directory) take a file lock, so one pretrains and the others load its result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import inspect
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from bench.harness.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from bench.harness.environment import utc_now
from bench.sdk.files import atomic_write_bytes
from bench.sdk.method import Method
from bench.sdk.paths import cache_dir
from bench.sdk.task import FewShotTask

KEY_VERSION = 2
_SDK_DIR = Path(inspect.getfile(Method)).parent


def base_only(task: FewShotTask) -> FewShotTask:
    """`task` without its support set: what pretraining may read (the support draw is not part of the cache key)."""
    info = dataclasses.replace(task.info, seed=-1, shots=0, support_indices=(), sha256="", tasks=())
    return dataclasses.replace(task, support=task.support[:0], info=info)


def _digest_tensor(digest, tensor: torch.Tensor) -> None:
    digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())


def base_set_digest(task: FewShotTask) -> str:
    """sha256 of everything of `base_only(task)` a method can read: base images and labels, and the task's fields."""
    digest = hashlib.sha256()
    _digest_tensor(digest, task.base_images)
    _digest_tensor(digest, task.base_labels)
    fields = {
        "image_shape": list(task.image_shape),
        "num_classes": task.num_classes,
        "novel_class": task.novel_class,
        "allows_hflip": task.allows_hflip,
        "class_descriptions": list(task.class_descriptions),
        "dataset": task.info.dataset,
    }
    digest.update(json.dumps(fields, sort_keys=True).encode())
    return digest.hexdigest()


def code_digest(method_class: type[Method]) -> str:
    """sha256 of the source a method's pretraining can run: its own module, every module of its package (shared
    networks and losses live beside it) and the method SDK. Editing any of them starts a new cache entry."""
    module_file = Path(inspect.getfile(method_class))
    files = sorted({module_file, *module_file.parent.glob("*.py"), *_SDK_DIR.glob("*.py")})
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def pretraining_key(
    method: str, method_class: type[Method], budget, task: FewShotTask, train_seed: int, device: str
) -> tuple[str, dict]:
    """The cache key of a pretraining (sha256) and the content it hashes (stored beside the entry)."""
    content = {
        "key_version": KEY_VERSION,
        "method": method,
        "method_version": method_class.version,
        "config": dataclasses.asdict(method_class.Config()),
        "budget": dataclasses.asdict(budget),
        "code_sha256": code_digest(method_class),
        "base_set_sha256": base_set_digest(task),
        "train_seed": train_seed,
        "torch": torch.__version__,
        "device_type": torch.device(device).type,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest(), content


@dataclasses.dataclass
class Pretrained:
    """A pretrained method and how it was obtained (what the run record's `pretraining` says)."""

    method: Method
    key: str
    reused: bool
    seconds: float  # pretraining time (computed) or loading time (reused)

    def record(self) -> dict:
        return {"cache_key": self.key, "reused": self.reused}


class PretrainingCache:
    """Pretrained methods on disk, keyed by `pretraining_key`; `root=None`: the user cache's `pretrained/`."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "pretrained"

    def _paths(self, method: str, key: str) -> tuple[Path, Path, Path]:
        stem = self.root / f"{method}-{key[:32]}"
        return stem.with_suffix(".pt"), stem.with_suffix(".json"), stem.with_suffix(".lock")

    @contextlib.contextmanager
    def _locked(self, lock_path: Path) -> Iterator[None]:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load(self, method: str, key: str, device: str) -> Method | None:
        file, sidecar, _ = self._paths(method, key)
        if not sidecar.is_file():
            return None
        try:
            entry = json.loads(sidecar.read_text())
            if entry.get("key") != key:
                return None
            return load_checkpoint(file, entry["sha256"], device)
        except (CheckpointError, ValueError, KeyError):  # a stale or damaged entry is recomputed and replaced
            return None

    def get_or_pretrain(
        self, method: str, key: str, content: dict, device: str, pretrain: Callable[[], Method]
    ) -> Pretrained:
        """The entry of `key`, loaded; or `pretrain()`'s result, stored under `key` first."""
        file, sidecar, lock = self._paths(method, key)
        with self._locked(lock):
            start = time.perf_counter()
            cached = self._load(method, key, device)
            if cached is not None:
                return Pretrained(cached, key, True, time.perf_counter() - start)
            fitted = pretrain()
            seconds = time.perf_counter() - start
            sha256 = save_checkpoint(file, fitted)
            entry = {"key": key, "content": content, "sha256": sha256, "seconds": seconds, "created_at": utc_now()}
            atomic_write_bytes(sidecar, (json.dumps(entry, indent=1, sort_keys=True) + "\n").encode())
            # Adapt from the stored entry, as a later run will: the two then start from the same bytes (an
            # in-memory model can hold views of larger storages, which changes how its own checkpoint pickles).
            stored = self._load(method, key, device)
            if stored is None:
                raise CheckpointError(f"the pretraining just stored at {file} could not be read back")
            stored.training_log, stored.timings = fitted.training_log, fitted.timings
            return Pretrained(stored, key, False, seconds)
