"""A small name → object registry that refuses duplicates and lists what it knows in its errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (functions, classes, factories).

    Args:
        kind: What the registry holds, used in error messages (e.g. ``"loss"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, override: bool = False) -> T | Callable[[T], T]:
        """Registers ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted.

        Args:
            name: The registry key.
            obj: The object; omit to use as ``@registry.register("name")``.
            override: Replace an existing entry instead of raising.
        """

        def _add(item: T) -> T:
            if not override and name in self._items and self._items[name] is not item:
                raise ValueError(
                    f"A {self.kind} named {name!r} is already registered. Pick another name or pass override=True."
                )
            self._items[name] = item
            return item

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        """Returns the entry for ``name`` or raises a ``KeyError`` listing the registered names."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"Unknown {self.kind} {name!r}. Registered: {known}.") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)
