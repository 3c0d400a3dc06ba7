"""A progress bar for the benchmarks: drawn on a terminal, silent in CI or when piped.

with stages(6, "local benchmarks") as step:
    spawn = measure()
    step("spawn")                          # one stage done
    rates = [run() for _ in each(range(3), step, "one-way")]   # one stage per item
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
Step = Callable[[str], None]


def enabled() -> bool:
    """Bars only for a person watching: stderr is a terminal and $CI is not set."""
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def stages(total: int, title: str) -> Iterator[Step]:
    """A bar of `total` stages on stderr, gone when the block ends (the results stay
    clean); yields `step(label)`, which marks one stage done."""
    if not enabled():
        yield lambda label: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(title, total=total)

        def step(label: str) -> None:
            bar.update(task, advance=1, description=f"{title}: {label} done")

        yield step


def each(items: Iterable[T], step: Step, label: str) -> Iterator[T]:
    """`items`, marking one stage done after each."""
    for item in items:
        yield item
        step(label)
