"""Fixtures for tests that call model providers: a real sandbox server on loopback.

Import the fixtures into a test module (or a conftest) and ask for them by name:

    from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
        provider_expected_keys, provider_server, provider_server_factory, retry_delays,
    )
    from tests.runs.provider_server import make_secret

    @pytest.mark.parametrize("provider_expected_keys", [{"sk-test-key"}])
    def test_something(provider_server, retry_delays):
        secret = make_secret("sk-test-key")
        ...  # call_provider("anthropic" | "openai" | "sandbox", ..., pause=retry_delays.append)
        ...  # now reaches the sandbox
        assert provider_server.requests[-1].headers["x-api-key"] == "sk-test-key"

- `provider_server`: a started `swrly.dev.sandbox.SandboxServer`, stopped after the test. It
  accepts only the keys in `provider_expected_keys` (None by default: any non-empty key);
  override that fixture by parametrizing it, as above, or by redefining it. Through
  pytest-django's `settings` it sets DEBUG = True (plain http on loopback needs it) and points
  every provider (anthropic, openai, sandbox) at the server.
- `provider_server_factory(expected_keys=None, providers=..., gateway=None)`: the same for a
  second server, for one that serves only some providers, or for one that answers through a
  gateway's header renaming (`gateway="litellm"`); the last one started is the one configured.
- `retry_delays`: a list to record the waits between attempts: pass `pause=retry_delays.append`
  to call_provider(), send() or run_execute() and it holds every delay, in seconds, that a
  retry would have waited. Retries still go to the server for real.
- `make_secret(value=None)`: a ProviderSecret (a fresh random sandbox key when no value).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from swrly.dev.sandbox import SandboxServer
from swrly.keys.secret import ProviderSecret
from swrly.providers import PROVIDER_NAMES


def make_secret(value: str | None = None) -> ProviderSecret:
    """A ProviderSecret holding `value`, or a fresh random key shaped like a sandbox key."""
    return ProviderSecret(value or "sk-sandbox-" + secrets.token_urlsafe(24))


@pytest.fixture
def provider_expected_keys() -> set[str] | None:
    """The keys `provider_server` accepts; None accepts any non-empty key."""
    return None


@pytest.fixture
def provider_server_factory(settings: Any) -> Iterator[Callable[..., SandboxServer]]:
    """Start sandbox servers, configured as the providers' base URLs; all stop after the test."""
    started: list[SandboxServer] = []

    def start(
        expected_keys: Iterable[str] | None = None,
        providers: Iterable[str] = PROVIDER_NAMES,
        gateway: str | None = None,
    ) -> SandboxServer:
        server = SandboxServer(expected_keys=expected_keys, gateway=gateway).start()
        started.append(server)
        settings.DEBUG = True
        settings.PROVIDER_BASE_URLS = dict.fromkeys(providers, server.url)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def provider_server(
    provider_server_factory: Callable[..., SandboxServer],
    provider_expected_keys: set[str] | None,
) -> SandboxServer:
    """A started sandbox that every provider's base URL points at."""
    return provider_server_factory(expected_keys=provider_expected_keys)


@pytest.fixture
def retry_delays() -> list[float]:
    """An empty list; pass `pause=retry_delays.append` to call_provider (or run_execute) and it
    holds the delays a retry would have waited, recorded instead of slept."""
    return []
