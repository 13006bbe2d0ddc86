"""A tiny name -> object registry whose lookup errors list the valid names (STYLE habit 9)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sparsearch.errors import unknown_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Map string choices of one kind (``"pattern"``, ``"schedule"``...) to classes or functions.

    Example:
        >>> r = Registry("color")
        >>> _ = r.register("red")(int)
        >>> r.get("red") is int
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise unknown_choice(self.kind, name, self._items) from None

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise the standard :class:`SpecError`."""
        self.get(name)
        return name

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
