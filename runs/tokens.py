"""A run's provider-key tokens in the key store, as the services and the executor let go of them."""

import logging
from typing import Any

from swrly import keys

log = logging.getLogger(__name__)


def discard_token_best_effort(tenant_id: Any, run_id: Any, provider: str) -> bool | None:
    """DEL a token; None when the key store is down (the token then expires at its TTL)."""
    try:
        return keys.discard(tenant_id=tenant_id, run_id=run_id, provider=provider)
    except keys.KeyStoreUnavailable:
        log.warning("could not discard the %s token of run %s; it expires", provider, run_id)
        return None
