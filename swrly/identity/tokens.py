"""Invitation link secrets: random, stored as an HMAC digest, checked in constant time."""

import hashlib
import hmac
import secrets

from django.conf import settings

_DIGEST_SALT = b"swrly.invitation.v1"


def _digest(secret: str, secret_key: str) -> str:
    key = hmac.new(secret_key.encode(), _DIGEST_SALT, hashlib.sha256).digest()
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def invitation_secret_generate() -> tuple[str, str]:
    """A new link secret: (the secret, sent once in the e-mail; its digest, stored)."""
    secret = secrets.token_urlsafe(32)
    return secret, _digest(secret, settings.SECRET_KEY)


def invitation_secret_matches(secret: str, digest: str) -> bool:
    """Constant-time check of a presented secret against a stored digest (any SECRET_KEY)."""
    if not secret or len(secret) > 128:
        return False
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    # Every key is tried, so the time taken does not depend on which one matched.
    results = [hmac.compare_digest(_digest(secret, key), digest) for key in keys]
    return any(results)
