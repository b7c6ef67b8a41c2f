"""API token secrets: `swr_<prefix>_<secret>`, stored as the prefix plus an HMAC digest."""

import hashlib
import hmac
import secrets

from django.conf import settings

TOKEN_SCHEME = "swr_"  # noqa: S105 (a public prefix, not a secret)
PREFIX_LENGTH = 12
_DIGEST_SALT = b"swrly.api-token.v1"


def _digest(token: str, secret_key: str) -> str:
    key = hmac.new(secret_key.encode(), _DIGEST_SALT, hashlib.sha256).digest()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def token_generate() -> tuple[str, str, str]:
    """A new token: (full secret shown once, display prefix, digest to store)."""
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    token = f"{TOKEN_SCHEME}{prefix}_{secrets.token_urlsafe(32)}"
    return token, prefix, _digest(token, settings.SECRET_KEY)


def token_prefix(token: str) -> str | None:
    """The lookup prefix of a well-formed token, or None."""
    if not token.startswith(TOKEN_SCHEME) or len(token) > 128:
        return None
    prefix, sep, rest = token[len(TOKEN_SCHEME) :].partition("_")
    if not sep or len(prefix) != PREFIX_LENGTH or not rest:
        return None
    return prefix


def token_matches(token: str, digest: str) -> bool:
    """Constant-time check of a presented token against a stored digest (any SECRET_KEY)."""
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    # Compare against every key so the time taken does not depend on which one matched.
    results = [hmac.compare_digest(_digest(token, key), digest) for key in keys]
    return any(results)
