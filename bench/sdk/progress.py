"""Progress reporting that long loops call without knowing how it is shown.

Methods and the evaluator call `reporter.task(description, total)` and `advance()` on the
handle; the CLI passes a rich-backed reporter (bars with ETA) on a terminal and timestamped
lines (`PlainReporter`) otherwise; tests and library use get the silent `NullReporter`.
"""

from __future__ import annotations

import datetime
import time
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


class PrefixedReporter:
    """Prefixes every task's description (e.g. with the run it belongs to: `vae seed 0: pretrain`)."""

    def __init__(self, reporter: Reporter, prefix: str):
        self.reporter, self.prefix = reporter, prefix

    def task(self, description: str, total: int) -> ProgressHandle:
        return self.reporter.task(f"{self.prefix}{description}", total)


class PlainReporter:
    """Timestamped lines for logs without a terminal (CI, batch jobs): a line when a task starts, at most one every
    `interval` seconds while it runs (count, percentage, elapsed, estimated remaining), and one when it ends."""

    def __init__(self, stream, interval: float = 30.0, clock=time.monotonic):
        self.stream, self.interval, self.clock = stream, interval, clock

    def line(self, text: str) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.stream.write(f"{stamp} {text}\n")
        self.stream.flush()

    def task(self, description: str, total: int) -> ProgressHandle:
        reporter, start = self, self.clock()
        state = {"done": 0, "printed": start}
        reporter.line(f"{description}: started ({total:,} steps)")

        class _Handle:
            def advance(self, amount: int = 1) -> None:
                state["done"] += amount
                now = reporter.clock()
                if now - state["printed"] >= reporter.interval and state["done"] < total:
                    state["printed"] = now
                    elapsed = now - start
                    remaining = elapsed * (total - state["done"]) / max(state["done"], 1)
                    reporter.line(
                        f"{description}: {state['done']:,}/{total:,} ({state['done'] / max(total, 1):.0%}), "
                        f"{elapsed:.0f} s, about {remaining:.0f} s left"
                    )

            def close(self) -> None:
                reporter.line(
                    f"{description}: ended at {state['done']:,}/{total:,} after {reporter.clock() - start:.0f} s"
                )

        return _Handle()
