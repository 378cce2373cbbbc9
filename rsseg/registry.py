"""A name -> entry registry (the way timm registers models): datasets and regularizers use it.

Entries are registered once under a unique name; an unknown name is a :class:`ConfigError` that
lists the registered ones, so the registry is the one list of choices (CLI flags, config checks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from rsseg.errors import ConfigError


class Registry[T]:
    """Entries keyed by name, in registration order. ``kind`` names them in messages ("dataset")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests that register a throw-away entry)."""
        del self._entries[name]

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries
