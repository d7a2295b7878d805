"""One small Registry type: a config name maps to a builder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ganlab.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders; an unknown name is a UserError that lists the choices."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group  # the config group whose files choose entries (loss, defense)
        self._entries: dict[str, T] = {}

    def register(self, name: str, settings: type | None = None) -> Callable[[T], T]:
        """Decorator. `settings`: the dataclass of the entry's config file in conf/<group>/,
        stored as <group>/schema_<name> for its defaults list."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            if settings is not None:
                from ganlab.config import register_schema

                register_schema(self.group, name, settings)
            return entry

        return add

    @staticmethod
    def _fill() -> None:
        """Import every module that registers (once): a registry is complete when read."""
        from ganlab.plugins import discover

        discover()

    def get(self, name: str) -> T:
        self._fill()
        if name not in self._entries:
            choices = ", ".join(self.names())
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {choices}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._fill()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._fill()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
