"""A small name -> object registry with did-you-mean lookups.

It imports nothing heavy, so configuration checks can use it before TensorFlow is loaded.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from regfw.errors import UserError

T = TypeVar("T")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Returns `" Did you mean 'x'?"` for the closest choice, or an empty string."""
    matches = difflib.get_close_matches(str(word), sorted(map(str, choices)), n=1, cutoff=0.6)
    return f" Did you mean '{matches[0]}'?" if matches else ""


class UnknownNameError(UserError, LookupError):
    """Raised when a name is not in a registry; the message lists what is available."""


class Registry(Generic[T]):
    """Maps names to objects; registering a taken name is an error.

    Args:
        kind: What the registry holds, used in error messages (e.g. "penalty").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Returns a decorator that registers its argument under `name`.

        Raises:
            ValueError: If `name` is already registered.
        """

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Registers `obj` under `name`.

        Raises:
            ValueError: If `name` is empty or already registered.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} name must be a non-empty string, got {name!r}.")
        if name in self._entries:
            raise ValueError(
                f"The {self.kind} name '{name}' is already registered "
                f"(by {self._entries[name]!r}); choose another name."
            )
        self._entries[name] = obj

    def lookup(self, name: str) -> T:
        """Returns the object registered under `name`.

        Raises:
            UnknownNameError: If nothing is registered under `name`; the message lists the
                available names and the closest match.
        """
        if name not in self._entries:
            raise UnknownNameError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)} "
                f"Available: {', '.join(self.names())}. (A {self.kind} registered in your own "
                "module is only known once that module is imported.)"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """Returns the registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
