"""One rich console pair and progress bar for long work (house rule 10).

Results go to stdout (tables, then the run path as the last line); progress and logs go to
stderr so ``$(clirkit eval ...)`` captures only what a script needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import track as rich_track

T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True)


def progress() -> Progress:
    """A progress bar on stderr with counts, elapsed and remaining time, and a free-text field."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=err, transient=False)


def track(iterable: Iterable[T], description: str) -> Iterable[T]:
    """``iterable`` with a transient progress display on :data:`err`, only when stderr is a terminal.

    Data preparation streams millions of lines; in tests, logs and pipes the loop runs bare.
    """
    if not err.is_terminal:
        return iterable
    return rich_track(iterable, description=description, console=err, transient=True)
