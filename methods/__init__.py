"""Registered few-shot generators: one module per method, registry key = module name = CLI name.

Add a method by adding one file that defines a `bench.sdk.method.Method` subclass decorated with
`@register`; it is then listed by `bench list methods`, runnable by `bench run`, and covered
by the registry-parametrised smoke tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.sdk.registry import Registry, key_for_module

if TYPE_CHECKING:  # importing it imports torch; the CLI reads METHODS' names before it needs torch
    from bench.sdk.method import Method

METHODS: Registry[type[Method]] = Registry("method", "methods", entry_point_group="fewshot_bench.methods")


def register(cls: type[Method]) -> type[Method]:
    cls.validate_definition(key_for_module(cls.__module__))
    return METHODS.register(cls, cls.__module__)


def method_names(methods: bool = True, references: bool = True) -> list[str]:
    """Registered names: the generators under test, the reference rows (oracle, copy floors), or both."""
    return [name for name, cls in METHODS.items() if (references if cls.is_reference else methods)]
