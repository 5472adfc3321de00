"""Name -> object registries (losses, perturbations, students, ...).

Duplicate names are rejected and unknown names list the known ones, as ir_measures and MTEB do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from clirkit.errors import ClirkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to objects, filled by the :meth:`register` decorator.

    Args:
        kind: what is registered ("loss", "perturbation"); used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is a bug (ValueError)."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object named ``name``; unknown names raise ClirkitError listing known ones."""
        try:
            return self._items[name]
        except KeyError:
            raise ClirkitError(
                f"unknown {self.kind} {name!r}", fix=f"use one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
