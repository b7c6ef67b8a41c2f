"""Typed outcomes of the key service.

Every message says which rule failed or what happened, never what the key is: an exception's
text ends up in logs, error reports and API responses. Tenant and run ids and provider names
are not secrets and are kept as attributes for the caller's audit record.
"""

from __future__ import annotations


class KeyServiceError(Exception):
    """Base class of every error the key service raises on purpose."""


class InvalidProvider(KeyServiceError, ValueError):
    """The provider is not one the key service accepts."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        # The rejected value is not echoed: a misplaced key could sit where a name belongs.
        self.allowed = allowed
        super().__init__(f"unknown provider; expected one of {', '.join(allowed)}")


class InvalidKey(KeyServiceError, ValueError):
    """A customer key breaks a validation rule; the message names the rule, not the key."""

    def __init__(self, provider: str, rule: str) -> None:
        self.provider = provider
        self.rule = rule
        super().__init__(f"the {provider} key {rule}")


class KeyStoreUnavailable(KeyServiceError):
    """The key-store Redis is unreachable, timed out or refused the command.

    The API turns it into 503. The redis-py error is chained as the cause for operators; its
    text names the server, never a key or a token.
    """


class TokenExists(KeyServiceError):
    """A deposit was refused (SET NX): a token already exists for this tenant, run and provider."""

    def __init__(self, *, tenant_id: str, run_id: str, provider: str) -> None:
        self.tenant_id, self.run_id, self.provider = tenant_id, run_id, provider
        super().__init__(f"a {provider} key token already exists for run {run_id}")


class TokenMissing(KeyServiceError):
    """No token at consume: never deposited, expired, discarded, or already consumed."""

    def __init__(self, *, tenant_id: str, run_id: str, provider: str) -> None:
        self.tenant_id, self.run_id, self.provider = tenant_id, run_id, provider
        super().__init__(f"no {provider} key token for run {run_id} (expired or already taken)")


class UnknownKeyId(KeyServiceError):
    """The token names an encryption key id the keyring does not hold: that key was retired."""

    def __init__(self, key_id_hex: str) -> None:
        self.key_id_hex = key_id_hex
        super().__init__(
            f"the token is encrypted under key id {key_id_hex}, which is neither "
            "BYOK_ENCRYPTION_KEY nor one of BYOK_ENCRYPTION_KEY_FALLBACKS"
        )


class TokenAuthenticationFailed(KeyServiceError):
    """The token does not authenticate: tampered with, truncated, or moved to another run.

    A security event: the caller records it.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"token authentication failed: {reason}")


class KeyringError(KeyServiceError):
    """An encryption-key setting is malformed, of the wrong length, or duplicated."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable} {problem}")


class SecretDiscarded(RuntimeError):
    """A discarded ProviderSecret was revealed: a programming error, not a key-service outcome."""
