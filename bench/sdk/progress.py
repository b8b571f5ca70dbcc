"""Progress reporting that long loops call without knowing how it is shown.

Methods and the evaluator call `reporter.task(description, total)` and `advance()` on the
handle; the CLI passes a rich-backed reporter (bars with ETA), tests and library use get
the silent `NullReporter`.
"""

from __future__ import annotations

from typing import Protocol


class ProgressHandle(Protocol):
    def advance(self, amount: int = 1) -> None: ...
    def close(self) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int) -> ProgressHandle: ...


class _NullHandle:
    def advance(self, amount: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class NullReporter:
    def task(self, description: str, total: int) -> ProgressHandle:
        return _NullHandle()


class RichReporter:
    """Adds one bar per task to a `rich.progress.Progress`; finished bars are removed."""

    def __init__(self, progress, prefix: str = ""):
        self.progress = progress
        self.prefix = prefix

    def task(self, description: str, total: int) -> ProgressHandle:
        task_id = self.progress.add_task(f"{self.prefix}{description}", total=total)
        progress = self.progress

        class _Handle:
            def advance(self, amount: int = 1) -> None:
                progress.advance(task_id, amount)

            def close(self) -> None:
                progress.remove_task(task_id)

        return _Handle()
