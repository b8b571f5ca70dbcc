"""Where the project looks for data and keeps caches (never inside the source tree)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "BENCH_DATA_DIR"
CACHE_DIR_ENV = "BENCH_CACHE_DIR"
# A folder searched before the package's own for the pinned evaluator weights files (bench/features/evaluator.py).
EVALUATOR_DIR_ENV = "BENCH_EVALUATOR_DIR"
SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")


def cache_dir() -> Path:
    """The per-user cache: `$BENCH_CACHE_DIR`, else `$XDG_CACHE_HOME/fewshot-bench`, else `~/.cache/fewshot-bench`."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fewshot-bench"


def data_search_dirs(dataset: str) -> list[tuple[str, Path]]:
    """The folders searched for a dataset's files, in order, each with a label for error messages."""
    dirs: list[tuple[str, Path]] = []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append((f"${DATA_DIR_ENV}", Path(os.environ[DATA_DIR_ENV]).expanduser() / dataset))
    dirs.append(("Debian datasets", SYSTEM_DATASETS_DIR / dataset))
    dirs.append(("user cache", cache_dir() / "data" / dataset))
    return dirs
