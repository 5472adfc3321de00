"""One rich console pair and progress bar for long work (house rule 10).

Results go to stdout (tables, then the run path as the last line); progress and logs go to
stderr so ``$(clirkit eval ...)`` captures only what a script needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import track as rich_track

from clirkit.errors import ClirkitError

T = TypeVar("T")

out = Console(soft_wrap=True)
err = Console(stderr=True)


def fail(e: ClirkitError) -> typer.Exit:
    """Print a user error as one line on stderr; the caller raises the returned exit (code 2).

    The message holds the user's input and paths: "[slurm]" or "x[1]" must print as written.
    """
    err.print(f"[bold red]error:[/] {escape(e.one_line())}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(2)


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
