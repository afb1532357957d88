"""Remember what a pure function computed for one site (sites are frozen: same object, same
answer), so a check or a render that asks many times for the DIT or the ACL's needs pays once.

Keyed by the site object's identity, holding a reference to it (its id cannot be reused while
cached); the last :data:`SIZE` sites are kept. Values are returned as computed: the functions
memoized here return tuples, never something a caller could change for the next one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
SIZE = 4


def per_site(fn: Callable[[Any], T]) -> Callable[[Any], T]:
    cache: dict[int, tuple[object, T]] = {}

    @functools.wraps(fn)
    def wrapper(site: Any) -> T:
        hit = cache.get(id(site))
        if hit is not None and hit[0] is site:
            return hit[1]
        value = fn(site)
        if len(cache) >= SIZE:
            cache.pop(next(iter(cache)))
        cache[id(site)] = (site, value)
        return value

    return wrapper
