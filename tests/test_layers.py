"""The package's layers import only downward (docs/protocol.md, "Layers"), read from the source with `ast`.

sdk <- data <- features <- harness; methods import only the SDK; metrics only the SDK's registry, its
likelihood modules (the binarisation and the AIS estimator that `nll`, `nll_ais` and the methods share) and their own package. No module imports a project module inside a function (a hidden cycle), except
the CLI, which loads its commands lazily so that it answers a bad argument fast.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("bench", "methods", "metrics")

# What each layer may import from the project (prefixes of module names).
ALLOWED = {
    "bench.sdk": ("bench.sdk",),
    "bench.data": ("bench.sdk", "bench.data"),
    "bench.features": ("bench.sdk", "bench.data", "bench.features"),
    "methods": ("bench.sdk", "methods"),
    "metrics": ("bench.sdk.registry", "bench.sdk.likelihood", "bench.sdk.ais", "metrics"),
    "bench.harness": PROJECT,
}
LAZY_IMPORTS_ALLOWED = {"bench.harness.cli", "bench"}  # the CLI and the package's lazy API


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    return next(
        prefix
        for prefix in sorted(ALLOWED, key=len, reverse=True)
        if module == prefix or module.startswith(prefix + ".")
    )


def project_imports(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found += [(node, name) for name in names if name.split(".")[0] in PROJECT]
    return found


def sources() -> list[Path]:
    return sorted(path for folder in PROJECT for path in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_go_only_downward(path):
    module = module_name(path)
    if module == "bench":
        pytest.skip("the package's own __init__ re-exports the public API")
    allowed = ALLOWED[layer_of(module)]
    tree = ast.parse(path.read_text())
    wrong = [
        f"line {node.lineno}: {name}"
        for node, name in project_imports(tree)
        if not any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)
    ]
    assert not wrong, f"{module} ({layer_of(module)}) may import only {allowed}; it imports " + ", ".join(wrong)


@pytest.mark.parametrize("path", sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_project_import_inside_a_function(path):
    module = module_name(path)
    if module in LAZY_IMPORTS_ALLOWED:
        pytest.skip("the CLI loads its commands lazily")
    tree = ast.parse(path.read_text())
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(imp) for function in functions for imp, _ in project_imports(function)}
    lazy = [f"line {node.lineno}: {name}" for node, name in project_imports(tree) if id(node) in inner]
    assert not lazy, f"{module} imports project modules inside functions: " + ", ".join(lazy)


def test_the_checker_sees_a_violation(tmp_path):
    tree = ast.parse("def f():\n    from bench.harness.runner import run_one\n")
    assert [name for _, name in project_imports(tree)] == ["bench.harness.runner"]
    assert layer_of("methods.vae") == "methods" and layer_of("bench.sdk.task") == "bench.sdk"
