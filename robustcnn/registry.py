"""A generic name -> factory registry (timm's pattern), shared by models and attacks."""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from robustcnn.errors import check_choice

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    description: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Factories registered by name; unknown names are errors with a close-match hint."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str | None = None, *, description: str = "", **meta: Any) -> Callable:
        """Decorator: `@registry.register(description=..., key=value)` stores the factory under its name."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            key = name or factory.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            doc = description or (factory.__doc__ or "").strip().splitlines()[0]
            self._entries[key] = Entry(key, factory, doc, dict(meta))
            return factory

        return decorate

    def get(self, name: str) -> Entry[T]:
        check_choice(self.kind, name, self._entries)
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, e.g. 'lenet*'."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries
