"""Few-shot image generation benchmark.

The Python API (`bench.harness.api`): `bench.evaluate(samples, dataset=...)` scores samples (an array, a
file, a folder of images or a generator callable) against a split; `bench.run(methods, dataset=...)` runs
a sweep and returns its records. Both are loaded on first use, so that `import bench.sdk` (what methods
and metrics import) does not import the harness.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fewshot-bench")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["Evaluation", "__version__", "evaluate", "run"]


def __getattr__(name: str):
    if name in ("evaluate", "run", "Evaluation"):
        from bench.harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
