"""User-facing errors.

A :class:`ClirkitError` is something the user can fix (a bad file, an unknown name, missing
data). The CLI prints it as one line and exits with code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from pathlib import Path


class ClirkitError(Exception):
    """An error the user caused and can fix.

    Args:
        message: what is wrong, naming the input.
        fix: what to do about it (appended after " -- ").
        path: the file concerned, if any.
        line: the 1-based line number in ``path``, if any.
    """

    def __init__(self, message: str, *, fix: str | None = None, path: str | Path | None = None,
                 line: int | None = None) -> None:
        self.message = message
        self.fix = fix
        self.path = str(path) if path is not None else None
        self.line = line
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        text = f"{where}{self.message}"
        if self.fix:
            text += f" -- {self.fix}"
        return " ".join(text.split())
