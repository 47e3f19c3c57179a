"""A name registry whose failed lookup lists what is registered, and whose ``add`` checks
that a registered class implements the contract (Lightning fabric's accelerator registry)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from hwkit.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects and remembers which plugin registered each.

    With ``base``, only subclasses of ``base`` (classes, not instances) are accepted.
    """

    def __init__(self, what: str, base: type | None = None) -> None:
        self.what = what
        self.base = base
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def check(self, item: object) -> None:
        """Raise TypeError unless ``item`` is a subclass of the contract."""
        if self.base is None:
            return
        if not (isinstance(item, type) and issubclass(item, self.base)):
            shown = item.__name__ if isinstance(item, type) else repr(item)
            raise TypeError(
                f"a {self.what} must be a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}, got {shown}"
            )

    def add(self, name: str, item: T, owner: str) -> None:
        self.check(item)
        if name in self._items:
            raise ValueError(
                f"{self.what} {name!r} is already registered by plugin {self._owners[name]!r}"
            )
        self._items[name] = item
        self._owners[name] = owner

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.what, name, list(self._items)) from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
