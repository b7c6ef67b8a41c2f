"""The BYOK key service: customer provider keys sealed in Redis for one run, consumed once.

The run engine and the API use deposit(), consume() and discard(); every outcome other than
success is a subclass of KeyServiceError. No Django models live here, and no Django app is
imported: settings are read lazily, when an operation runs.
"""

from swrly.keys.errors import (
    InvalidKey,
    InvalidProvider,
    KeyringError,
    KeyServiceError,
    KeyStoreUnavailable,
    SecretDiscarded,
    TokenAuthenticationFailed,
    TokenExists,
    TokenMissing,
    UnknownKeyId,
)
from swrly.keys.secret import ProviderSecret, live_secrets
from swrly.keys.store import DepositReceipt, consume, deposit, discard

__all__ = [
    "DepositReceipt",
    "InvalidKey",
    "InvalidProvider",
    "KeyServiceError",
    "KeyStoreUnavailable",
    "KeyringError",
    "ProviderSecret",
    "SecretDiscarded",
    "TokenAuthenticationFailed",
    "TokenExists",
    "TokenMissing",
    "UnknownKeyId",
    "consume",
    "deposit",
    "discard",
    "live_secrets",
]
