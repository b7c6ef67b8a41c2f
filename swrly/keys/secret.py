"""ProviderSecret: a customer's key in memory, which shows itself only when asked explicitly.

str(), repr(), format() with any spec, f-strings and %-formatting all give REDACTED_TEXT.
Pickling and copying raise TypeError: a copy would be a second holder to track and discard, and
a pickle is the key written somewhere. JSON encoders (json, DjangoJSONEncoder, DRF's) raise
TypeError because the object is neither a str nor a container. The plaintext is reachable
only through reveal().

Every ProviderSecret that is alive and not discarded is listed by live_secrets(), which the
redaction filters use to replace the exact value wherever it appears.
"""

from __future__ import annotations

import hmac
import os
import threading
import weakref
from types import TracebackType
from typing import Any, NoReturn

from django.views.decorators.debug import sensitive_variables

from swrly.keys.errors import SecretDiscarded

REDACTED_TEXT = "ProviderSecret(****)"
DISCARDED_TEXT = "ProviderSecret(discarded)"

_registry_lock = threading.Lock()
# By id(): ProviderSecret is unhashable. A dead object's entry goes with it (weak values).
_registry: weakref.WeakValueDictionary[int, ProviderSecret] = weakref.WeakValueDictionary()


def _reset_lock_in_child() -> None:
    """A fresh lock after fork: one held by another thread of the parent would never be freed."""
    global _registry_lock
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def live_secrets() -> frozenset[str]:
    """The plaintexts of every ProviderSecret alive and not discarded, for redaction by value."""
    with _registry_lock:
        holders = list(_registry.values())
    values = (holder._ProviderSecret__value for holder in holders)  # type: ignore[attr-defined]
    return frozenset(value for value in values if value is not None)


class ProviderSecret:
    """A provider key held for a run: redacted everywhere, revealed only by reveal().

    Use it as a context manager (`with consume(...) as secret:`) or call discard() when the
    run ends: either drops the reference and removes the value from live_secrets(). Python
    cannot wipe a str from memory; dropping every reference is the best it allows.
    """

    __slots__ = ("__value", "__weakref__", "key_id_hex")

    @sensitive_variables("value")
    def __init__(self, value: str, *, key_id_hex: str | None = None) -> None:
        if not isinstance(value, str):
            raise TypeError("ProviderSecret wraps a str")
        if not value:
            # An empty value would make redaction by value match everywhere.
            raise ValueError("ProviderSecret cannot wrap an empty string")
        self.__value: str | None = value
        self.key_id_hex = key_id_hex
        with _registry_lock:
            _registry[id(self)] = self

    def __init_subclass__(cls, **kwargs: Any) -> NoReturn:
        raise TypeError("ProviderSecret cannot be subclassed: a subclass could undo its guarantees")

    def reveal(self) -> str:
        """The plaintext key, for the one place that sends it to the provider."""
        value = self.__value
        if value is None:
            raise SecretDiscarded("this ProviderSecret was discarded")
        return value

    @property
    def discarded(self) -> bool:
        """Whether discard() was called."""
        return self.__value is None

    def discard(self) -> None:
        """Drop the plaintext: reveal() raises from now on and redaction forgets it. Idempotent."""
        self.__value = None
        with _registry_lock:
            if _registry.get(id(self)) is self:
                del _registry[id(self)]

    def __enter__(self) -> ProviderSecret:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()

    def __str__(self) -> str:
        return DISCARDED_TEXT if self.__value is None else REDACTED_TEXT

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        text = str(self)
        try:
            return format(text, spec)  # alignment and width apply to the redacted text
        except (ValueError, TypeError):
            return text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProviderSecret):
            return NotImplemented
        mine, theirs = self.__value, other._ProviderSecret__value
        if mine is None or theirs is None:
            return self is other
        return hmac.compare_digest(mine.encode(), theirs.encode())

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        return True

    def __copy__(self) -> NoReturn:
        raise TypeError("ProviderSecret cannot be copied; pass the same object")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("ProviderSecret cannot be copied; pass the same object")

    def __reduce__(self) -> NoReturn:
        raise TypeError("ProviderSecret cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("ProviderSecret cannot be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError("ProviderSecret cannot be pickled")
