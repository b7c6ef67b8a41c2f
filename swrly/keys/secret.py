"""ProviderSecret: a customer's key in memory, which shows itself only when asked explicitly.

str(), repr(), format() with any spec, f-strings and %-formatting all give REDACTED_TEXT.
Pickling and copying raise TypeError: a copy would be a second holder to track and discard, and
a pickle is the key written somewhere. JSON encoders (json, DjangoJSONEncoder, DRF's) raise
TypeError because the object is neither a str nor a container. The plaintext is reachable
only through reveal().

Every key that is live is listed by live_secrets() and matched by live_matchers(), which
redaction uses to replace the value, in every form it can be echoed in, wherever it appears. A
key is live while a ProviderSecret holds it (alive and not discarded) and, when the secret was
made inside `redaction_scope()` (an HTTP request, a Celery task), until that scope ends: an
error report rendered after a view's `finally` discarded the secret still knows the key.
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Any, NoReturn

from django.views.decorators.debug import sensitive_variables

from swrly.keys.encodings import KeyMatcher
from swrly.keys.errors import SecretDiscarded

REDACTED_TEXT = "ProviderSecret(****)"
DISCARDED_TEXT = "ProviderSecret(discarded)"

_registry_lock = threading.Lock()
# By id(): one entry per live key holder, kept while a secret or a scope holds it.
_registry: dict[int, _LiveKey] = {}
# Releases not yet applied. A secret collected by the garbage collector is released from a
# finalizer, which can run inside any allocation — also one made while this thread holds
# _registry_lock, where taking the lock again would deadlock. So a release only ever *tries* the
# lock; when it is busy the release waits here, and whoever takes the lock next applies it
# before reading the registry (a key stays redacted a moment longer, never less).
_pending_releases: deque[_LiveKey] = deque()
_scope: contextvars.ContextVar[list[_LiveKey] | None] = contextvars.ContextVar(
    "swrly_redaction_scope", default=None
)


def _reset_lock_in_child() -> None:
    """A fresh lock after fork: one held by another thread of the parent would never be freed."""
    global _registry_lock
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


class _LiveKey:
    """A key known to redaction: its value and its matcher, while anything holds it."""

    __slots__ = ("holders", "matcher", "value")

    @sensitive_variables("value")
    def __init__(self, value: str) -> None:
        self.value: str | None = value
        self.matcher: KeyMatcher | None = KeyMatcher(value)  # compiled once, on first use
        self.holders = 1
        with _registry_lock:  # _locked_registry() without a generator: once per consume
            _apply_pending_releases()
            _registry[id(self)] = self

    def hold(self) -> None:
        with _locked_registry():
            self.holders += 1

    def release(self) -> None:
        """One holder fewer; the last one makes redaction forget the key. Never blocks."""
        _pending_releases.append(self)
        if _registry_lock.acquire(blocking=False):
            try:
                _apply_pending_releases()
            finally:
                _registry_lock.release()

    def _release_locked(self) -> None:
        self.holders -= 1
        if self.holders > 0:
            return
        _registry.pop(id(self), None)
        self.value = self.matcher = None

    def __repr__(self) -> str:
        return "_LiveKey(****)"


def _apply_pending_releases() -> None:
    """With _registry_lock held: apply the releases that could not take it."""
    while True:
        try:
            entry = _pending_releases.popleft()
        except IndexError:
            return
        entry._release_locked()


@contextlib.contextmanager
def _locked_registry() -> Iterator[dict[int, _LiveKey]]:
    with _registry_lock:
        _apply_pending_releases()
        yield _registry


def _live_keys() -> list[_LiveKey]:
    with _locked_registry() as registry:
        return list(registry.values())


def live_secrets() -> frozenset[str]:
    """The plaintexts of every live key, for redaction by value."""
    values = (entry.value for entry in _live_keys())
    return frozenset(value for value in values if value is not None)


def _value_or_none(secret: ProviderSecret) -> str | None:
    """The secret's plaintext, or None once it was discarded."""
    try:
        return secret.reveal()
    except SecretDiscarded:
        return None


def live_matchers(
    *, excluding: ProviderSecret | None = None, only: ProviderSecret | None = None
) -> list[KeyMatcher]:
    """The matchers of every live key, longest key first; without `excluding`'s own key, or
    only `only`'s."""
    own = None if excluding is None else _value_or_none(excluding)
    wanted = None if only is None else _value_or_none(only)
    if only is not None and wanted is None:
        return []
    found = []
    for entry in _live_keys():
        value, matcher = entry.value, entry.matcher
        if value is None or matcher is None:
            continue
        if own is not None and hmac.compare_digest(value.encode(), own.encode()):
            continue
        if wanted is not None and not hmac.compare_digest(value.encode(), wanted.encode()):
            continue
        found.append((len(value), matcher))
    found.sort(key=lambda item: item[0], reverse=True)
    return [matcher for _, matcher in found]


@contextlib.contextmanager
def redaction_scope() -> Iterator[None]:
    """Keep every key held inside this block known to redaction until the block ends.

    A secret discarded inside the block stops revealing its value at once, but its value stays
    redacted from logs and error reports made before the block ends (an HTTP request's 500 page
    and error e-mail, a task's failure log). Nested scopes each keep what was made inside them.
    """
    held: list[_LiveKey] = []
    token = _scope.set(held)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # ended in another context (a signal handler)
            _scope.reset(token)
        for entry in held:
            entry.release()


class ProviderSecret:
    """A provider key held for a run: redacted everywhere, revealed only by reveal().

    Use it as a context manager (`with consume(...) as secret:`) or call discard() when the
    run ends: either drops the reference and removes the value from live_secrets() (at the end
    of the enclosing redaction_scope(), if there is one). Python
    cannot wipe a str from memory; dropping every reference is the best it allows.
    """

    __slots__ = ("__release", "__value", "__weakref__", "key_id_hex")

    @sensitive_variables("value", "entry")
    def __init__(self, value: str, *, key_id_hex: str | None = None) -> None:
        if not isinstance(value, str):
            raise TypeError("ProviderSecret wraps a str")
        if not value:
            # An empty value would make redaction by value match everywhere.
            raise ValueError("ProviderSecret cannot wrap an empty string")
        self.__value: str | None = value
        self.key_id_hex = key_id_hex
        entry = _LiveKey(value)
        # Released by discard(), or when the secret is collected without one.
        self.__release = weakref.finalize(self, entry.release)
        scope = _scope.get()
        if scope is not None:
            entry.hold()
            scope.append(entry)

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
        """Drop the plaintext: reveal() raises from now on and redaction forgets it (at the end
        of the enclosing redaction_scope(), if the secret was made inside one). Idempotent."""
        self.__value = None
        self.__release()

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
        mine, theirs = self.__value, other.__value
        if mine is None or theirs is None:
            return self is other
        return hmac.compare_digest(mine.encode(), theirs.encode())

    # Unhashable, as a class defining __eq__ is; typeshed declares object.__hash__ a method.
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
