"""The provider registry: every fact about a model provider, stated once.

A `Provider` names a provider, says which `WireFormat` it speaks and where it lives by default;
a `WireFormat` says how that API looks on the wire (path, the headers that carry the key, the
response headers that carry a request id or a retry delay). The key store, the egress
allow-list, the step schema, the API serializers, the selectors, the provider clients and the
settings all read this module. It is a foundation: it imports nothing from the project, so
`swrly.keys` and every app may import it.

The code that builds request bodies and parses answers lives with the clients
(`runs.providers.anthropic`, `runs.providers.openai`); only the facts live here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# The setting (and environment variable) that overrides a provider's default base URL:
# `PROVIDER_BASE_URLS=anthropic=https://gw.internal/anthropic,sandbox=http://127.0.0.1:8765`.
BASE_URL_SETTING = "PROVIDER_BASE_URLS"

# A gateway may pass a provider's response headers through unchanged (a reverse proxy), re-send
# each under a prefix (LiteLLM's proxy answers every upstream header as `llm_provider-<name>`),
# or answer with the other API's name when it translates between the two APIs. The first name
# present wins: the provider's own name first, unprefixed before prefixed (docs/operations.md,
# "Gateways").
GATEWAY_HEADER_PREFIXES = ("", "llm_provider-")
# Where a retry delay may arrive: (name, seconds per unit). `-ms` is OpenAI's finer variant.
RETRY_AFTER_HEADERS = (("retry-after-ms", 0.001), ("retry-after", 1.0))


@dataclass(frozen=True)
class WireFormat:
    """One provider API on the wire: where to POST, how the key travels, the answer's headers."""

    name: str  # as messages name it: "Anthropic Messages"
    path: str
    auth_header: str  # the header that carries the key ...
    auth_scheme: str  # ... after this word ("Bearer"), or bare when ""
    request_id_header: str
    # Headers sent with every request beside the key's (an API version).
    fixed_headers: tuple[tuple[str, str], ...] = ()

    def auth_headers(self, key: str) -> dict[str, str]:
        """The headers that carry `key`, with the ones this API requires beside it."""
        value = f"{self.auth_scheme} {key}" if self.auth_scheme else key
        return {self.auth_header: value, **dict(self.fixed_headers)}


# https://platform.claude.com/docs/en/api/messages — `x-api-key` is still the documented header
# for an API key (the 2.x SDKs send `Authorization: Bearer`, which the API also accepts).
ANTHROPIC_API_VERSION = "2026-10-21"
ANTHROPIC_MESSAGES = WireFormat(
    name="Anthropic Messages",
    path="/v1/messages",
    auth_header="x-api-key",
    auth_scheme="",
    request_id_header="request-id",
    fixed_headers=(("anthropic-version", ANTHROPIC_API_VERSION),),
)
# https://platform.openai.com/docs/api-reference/chat
OPENAI_CHAT_COMPLETIONS = WireFormat(
    name="OpenAI Chat Completions",
    path="/v1/chat/completions",
    auth_header="authorization",
    auth_scheme="Bearer",
    request_id_header="x-request-id",
)
WIRE_FORMATS = (ANTHROPIC_MESSAGES, OPENAI_CHAT_COMPLETIONS)
# Every API's own request-id header: a gateway translating between APIs may answer with either.
REQUEST_ID_HEADERS = tuple(wire.request_id_header for wire in WIRE_FORMATS)


@dataclass(frozen=True)
class Provider:
    """A provider a step may name and a key may be given for."""

    name: str  # what workflows, keys and settings call it
    display_name: str
    wire: WireFormat
    # Where calls go unless BASE_URL_SETTING says otherwise; "" when the operator must name it.
    default_base_url: str = ""


_PROVIDERS = (
    Provider(
        name="anthropic",
        display_name="Anthropic",
        wire=ANTHROPIC_MESSAGES,
        default_base_url="https://api.anthropic.com",
    ),
    Provider(
        name="openai",
        display_name="OpenAI",
        wire=OPENAI_CHAT_COMPLETIONS,
        default_base_url="https://api.openai.com",
    ),
    # The development stand-in (`python -m swrly.dev.sandbox`): reachable only where the
    # operator names its address.
    Provider(name="sandbox", display_name="Sandbox", wire=OPENAI_CHAT_COMPLETIONS),
)

PROVIDERS: Mapping[str, Provider] = MappingProxyType({p.name: p for p in _PROVIDERS})
PROVIDER_NAMES: tuple[str, ...] = tuple(PROVIDERS)


def default_base_urls() -> dict[str, str]:
    """The base URL of each provider that has one before the operator configures anything."""
    return {p.name: p.default_base_url for p in _PROVIDERS if p.default_base_url}


def request_id_header_names(wire: WireFormat) -> tuple[str, ...]:
    """Where `wire`'s request id may arrive, in the order they are read."""
    own = wire.request_id_header
    names = [own, *(name for name in REQUEST_ID_HEADERS if name != own)]
    return tuple(prefix + name for name in names for prefix in GATEWAY_HEADER_PREFIXES)


def retry_after_header_names() -> tuple[str, ...]:
    """Where a retry delay may arrive, in the order they are read."""
    return tuple(
        prefix + name for prefix in GATEWAY_HEADER_PREFIXES for name, _ in RETRY_AFTER_HEADERS
    )
