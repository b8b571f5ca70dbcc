"""One registry mechanism for methods, metrics and datasets.

An entry is registered under its module's name, so the registry key, the file and the CLI
name always agree. A registry may write the module's underscores as hyphens (methods and
datasets do: `bench/data/datasets/fashion_mnist.py` registers `fashion-mnist`; metrics keep
underscores: `metrics/support_nn_mse.py` registers `support_nn_mse`); look-ups accept either. Entries are discovered by importing every module of their
package on first use. Unknown names raise `UnknownNameError`, which lists the valid
names and suggests the closest one.

Entries from outside the package (plugins) come two ways, and their code runs only when the user
names them:

- an installed distribution declares an entry point in the registry's group (methods:
  `fewshot_bench.methods`, metrics: `fewshot_bench.metrics`), `name = "package.module"`, `name`
  being the name the module registers (its last component); the module is imported when `name` is
  looked up (`get`, `resolve`) or when `load_plugins` is called (`bench list`);
- a module imported by the user (`bench run --import package.module`, or a Python `import`) that
  registers itself with the registry's decorator.

`origin(name)` says where an entry came from.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not in a registry; the message lists valid names and a suggestion."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(valid) or '(none)'}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]

    def __reduce__(self):
        # Rebuilt from its own arguments when a worker process sends it back (the default passes only the message).
        return type(self), (self.kind, self.name, self.valid)


class PluginImportError(ImportError):
    """A plugin or a module named by the user could not be imported, or registered nothing; the message says why."""


def key_for_module(module_name: str, separator: str = "-") -> str:
    """Registry key of a module: its last dotted component, with `separator` for underscores."""
    return module_name.rsplit(".", 1)[-1].replace("_", separator)


class Registry(Generic[T]):
    """Named entries of one kind, discovered from the modules of one package (and plugins: see the module docstring)."""

    def __init__(self, kind: str, package: str, separator: str = "-", entry_point_group: str | None = None):
        self.kind = kind
        self.package = package
        self.separator = separator
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._discovered = False

    def register(self, entry: T, module_name: str, key: str | None = None) -> T:
        key = key or key_for_module(module_name, self.separator)
        if key in self._entries and self._entries[key] is not entry:
            raise ValueError(f"{self.kind} '{key}' is registered twice (second time from {module_name})")
        self._entries[key] = entry
        if key not in self._origins:
            inside = module_name == self.package or module_name.startswith(self.package + ".")
            self._origins[key] = "built-in" if inside else f"module {module_name}"
        return entry

    def origin(self, name: str) -> str:
        """`built-in`, `module M` (imported by the user) or `plugin D V (entry point M)`."""
        return self._origins[self._normalise(name)]

    def entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        """The installed plugins' entry points of this registry's group, by normalised name (nothing is imported)."""
        if not self.entry_point_group:
            return {}
        found = importlib.metadata.entry_points(group=self.entry_point_group)
        return {self._normalise(point.name): point for point in found}

    def _load_plugin(self, key: str, point: importlib.metadata.EntryPoint) -> None:
        """Import the plugin's module, which registers its entry (under its module's name, which must be `key`)."""
        try:
            point.load()
        except Exception as exc:
            raise PluginImportError(
                f"{self.kind} plugin '{point.name}' ({point.value}) failed to import: {exc}"
            ) from exc
        if key not in self._entries:
            raise PluginImportError(
                f"{self.kind} plugin '{point.name}': importing {point.value} registered no {self.kind} named '{key}' "
                f"(an entry point's name must be the registry name of the module it loads)"
            )
        dist = point.dist
        self._origins[key] = f"plugin {dist.name} {dist.version} (entry point {point.value})" if dist else "plugin"

    def load_plugins(self) -> None:
        """Import every installed plugin of this registry (what `bench list` does: the user asked to see them)."""
        self._discover()
        for key, point in self.entry_points().items():
            if key not in self._entries:
                self._load_plugin(key, point)

    def decorator(self) -> Callable[[T], T]:
        """`@REGISTRY.decorator()` on a class or object registers it under its module's name."""

        def wrap(entry: T) -> T:
            return self.register(entry, entry.__module__)

        return wrap

    def _normalise(self, name: str) -> str:
        return name.strip().replace("_", self.separator).replace("-", self.separator)

    def _discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def names_on_disk(self) -> list[str]:
        """The keys of the package's own modules and of the installed plugins, read from the module files and the
        installed metadata without importing any of them: importing the entries imports torch, which takes
        seconds, and a misspelt name should be answered at once."""
        spec = importlib.util.find_spec(self.package)
        locations = (spec.submodule_search_locations if spec else None) or []
        own = {
            key_for_module(i.name, self.separator)
            for i in pkgutil.iter_modules(locations)
            if not i.name.startswith("_")
        }
        return sorted(own | set(self.entry_points()))

    def check_names(self, spec: str) -> None:
        """Raise `UnknownNameError` for a name in comma-separated `spec` (or `all`) that `names_on_disk` lacks.

        Entries registered by a module the user imports are not on disk: check those with `resolve` after the import.
        """
        parts = [self._normalise(p) for p in spec.split(",") if p.strip()]
        valid = self.names_on_disk()
        if parts == ["all"]:
            return
        for part in parts or [spec]:
            if part not in valid:
                raise UnknownNameError(self.kind, part, valid)

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._discover()
        key = self._normalise(name)
        if key not in self._entries:
            point = self.entry_points().get(key)
            if point is None:
                raise UnknownNameError(self.kind, name, sorted({*self.names(), *self.entry_points()}))
            self._load_plugin(key, point)
        return self._entries[key]

    def resolve(self, spec: str, all_names: list[str] | None = None) -> list[str]:
        """Parse a comma-separated list of names (or `all`) into validated keys, in order."""
        self._discover()
        parts = [self._normalise(p) for p in spec.split(",") if p.strip()]
        if not parts:
            raise UnknownNameError(self.kind, spec, self.names())
        if parts == ["all"]:
            return list(all_names if all_names is not None else self.names())
        for part in parts:
            self.get(part)
        return list(dict.fromkeys(parts))

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._entries[name]
