"""Model-provider clients: the executor calls `call_provider()` and handles `ProviderError`."""

from runs.providers.base import ModelCall, ModelResult, ProviderError
from runs.providers.client import call_provider, provider_client

__all__ = ["ModelCall", "ModelResult", "ProviderError", "call_provider", "provider_client"]
