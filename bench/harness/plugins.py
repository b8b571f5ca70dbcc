"""Methods and metrics from outside the package: modules the user names with `--import`, and installed plugins.

Installed plugins (entry points) are found by the registries themselves (`bench.sdk.registry`). A module
named with `--import` (or imported by a Python caller) registers its entries when imported; a sweep
that runs in worker processes imports the same modules in each worker (`RunSpec.imports`), since a
spawned worker starts from nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from bench.sdk.registry import PluginImportError
from methods import METHODS

__all__ = ["PluginImportError", "import_modules", "parse_imports", "user_modules"]


def import_modules(names: Iterable[str]) -> None:
    """Import each named module (it registers its methods and metrics); PluginImportError naming the one that failed."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise PluginImportError(
                f"--import {name}: {type(exc).__name__}: {exc} (the module must be importable: on PYTHONPATH or installed)"
            ) from exc


def parse_imports(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def user_modules(method_names: Iterable[str]) -> tuple[str, ...]:
    """The modules that registered these methods from outside the package and outside any installed plugin: what a
    worker process must import to find them (`__main__` cannot be imported there)."""
    modules = []
    for name in method_names:
        origin = METHODS.origin(name)
        if origin.startswith("module "):
            modules.append(origin.removeprefix("module "))
    return tuple(dict.fromkeys(modules))
