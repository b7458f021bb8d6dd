"""Values derived from an immutable object, computed once per object.

The hot path derives the same small values again and again from a handful of immutable
objects: a rule's lowest bound (every reading), a place's JSON (every observation). Those
objects are not hashable cheaply (pydantic models) or hash by value at some cost (a Place's
eight strings), so the values are kept by the object's identity. The object itself is kept
with its value, so that its id cannot be reused by another object while the entry lives; a
changed rule is a new object (rule models are frozen) and gets an entry of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
V = TypeVar("V")


def per_object(maxsize: int) -> Callable[[Callable[[T], V]], Callable[[T], V]]:
    """Decorate ``derive(obj)`` to run once per object; at most ``maxsize`` entries (all are
    forgotten when it is full: the objects are few, a reload makes new ones).

    >>> calls = []
    >>> @per_object(maxsize=2)
    ... def length(items: tuple[int, ...]) -> int:
    ...     calls.append(items)
    ...     return len(items)
    >>> a, b = (1, 2), (1, 2, 3)
    >>> length(a), length(a), length(b), len(calls)
    (2, 2, 3, 2)
    >>> length((4,)), len(calls)          # full: forgotten, then kept again
    (1, 3)
    """
    def decorate(derive: Callable[[T], V]) -> Callable[[T], V]:
        kept: dict[int, tuple[T, V]] = {}

        def derived(obj: T) -> V:
            found = kept.get(id(obj))
            if found is not None and found[0] is obj:
                return found[1]
            if len(kept) >= maxsize:
                kept.clear()
            value = derive(obj)
            kept[id(obj)] = (obj, value)
            return value

        derived.__doc__ = derive.__doc__
        derived.__name__ = derive.__name__
        derived.__qualname__ = derive.__qualname__
        derived.__wrapped__ = derive  # type: ignore[attr-defined]
        return derived
    return decorate
