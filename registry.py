"""One registry type for everything condi-pipe looks up by name: models, methods, report tables, context rankings
and video sources. Each is a :class:`Registry` instance in the module that owns it, and its package registers the
built-ins when it is imported, so a lookup never depends on what else was imported first.

>>> colours = Registry("colour")
>>> @colours.register("red")
... def red():
...     return "#f00"
>>> _ = colours.register("green", "#0f0")
>>> colours.names()
('red', 'green')
>>> colours.get("blue")
Traceback (most recent call last):
...
condi_pipe.registry.UnknownName: unknown colour 'blue'; choose one of: red, green

This module imports nothing of the package and no third-party library: it is the lowest layer.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


class UnknownName(ValueError):
    """A name that nothing is registered under; the message lists what is (one line)."""

    def __init__(self, kind: str, name: str, choices: tuple[str, ...]):
        self.kind, self.name, self.choices = kind, name, choices
        listed = ", ".join(choices) if choices else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; choose one of: {listed}")


def first_docstring_line(obj: Any) -> str:
    """The first non-blank line of ``obj``'s docstring ("" without one): what registries show as a summary."""
    for line in (getattr(obj, "__doc__", None) or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


class Registry(Generic[T]):
    """Items of one ``kind`` by name, in registration order. A name is registered once: a second registration is
    refused (ValueError), and a lookup of an unregistered name raises :class:`UnknownName` listing the names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: Optional[T] = None) -> Any:
        """``register(name, item)`` registers ``item`` and returns it; ``@register(name)`` registers the decorated
        object and returns it unchanged."""
        if item is None:

            def decorate(decorated: T) -> T:
                return self.register(name, decorated)

            return decorate
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name is unknown too
            raise UnknownName(self.kind, name, self.names()) from None

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what was registered under it."""
        item = self.get(name)
        del self._items[name]
        return item

    @contextmanager
    def temporarily(self, name: str, item: T) -> Iterator[T]:
        """Register ``item`` as ``name`` for a ``with`` block (tests). A name already registered is shadowed for the
        block and gets its own item back, at its place in the order, afterwards."""
        names = list(self._items)
        previous = self._items.pop(name, None)
        position = names.index(name) if previous is not None else None
        self.register(name, item)
        try:
            yield item
        finally:
            self._items.pop(name, None)
            if position is not None:
                entries = list(self._items.items())
                entries.insert(min(position, len(entries)), (name, previous))
                self._items = dict(entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def values(self) -> tuple[T, ...]:
        return tuple(self._items.values())

    def items(self) -> tuple[tuple[str, T], ...]:
        return tuple(self._items.items())

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"

