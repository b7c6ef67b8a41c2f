import hashlib
import hmac

import pytest
from django.conf import settings

from swrly.custody.models import ProviderKey
from swrly.custody.services import provider_key_seen
from swrly.keys.fingerprint import key_hint
from swrly.keys.fingerprint import legacy_fingerprint as fingerprint


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("sk-ant-api03-" + "a" * 80 + "x9Qa", "sk-ant-api03-…x9Qa"),
        ("sk-proj-" + "b" * 40 + "Zz12", "sk-proj-…Zz12"),
        ("sk-" + "c" * 40 + "LAST", "sk-…LAST"),
        ("custom-gateway-key-" + "d" * 10 + "9876", "…9876"),
        ("short-key-123", "…"),  # too short to show any of it
    ],
)
def test_hint_shows_at_most_a_known_prefix_and_the_last_four(key, hint):
    assert key_hint(key) == hint


def test_fingerprint_is_stable_and_depends_on_key_and_provider():
    key = "sk-ant-canary-" + "k" * 40
    first = fingerprint(provider="anthropic", key=key)
    assert first == fingerprint(provider="anthropic", key=key)
    assert first.value != fingerprint(provider="anthropic", key=key + "x").value
    assert first.value != fingerprint(provider="openai", key=key).value
    assert len(first.value) == 64
    assert key not in first.value


def test_fingerprint_is_not_an_hmac_under_the_bare_secret_key():
    key = "sk-ant-canary-" + "k" * 40
    bare = hmac.new(settings.SECRET_KEY.encode(), f"anthropic\x00{key}".encode(), hashlib.sha256)
    assert fingerprint(provider="anthropic", key=key).value != bare.hexdigest()
    assert (
        fingerprint(provider="anthropic", key=key).value != hashlib.sha256(key.encode()).hexdigest()
    )


def test_provider_key_history_counts_uses_per_fingerprint(acme):
    old = fingerprint(provider="openai", key="sk-proj-" + "o" * 40 + "OLD1")
    new = fingerprint(provider="openai", key="sk-proj-" + "n" * 40 + "NEW2")
    provider_key_seen(tenant=acme.tenant, provider="openai", fingerprint=old.value, hint=old.hint)
    provider_key_seen(tenant=acme.tenant, provider="openai", fingerprint=old.value, hint=old.hint)
    provider_key_seen(tenant=acme.tenant, provider="openai", fingerprint=new.value, hint=new.hint)
    second = ProviderKey.objects.get(tenant=acme.tenant, fingerprint=old.value)
    replacement = ProviderKey.objects.get(tenant=acme.tenant, fingerprint=new.value)
    assert second.use_count == 2
    assert second.last_seen_at > second.first_seen_at
    assert replacement.use_count == 1
    assert replacement.first_seen_at > second.first_seen_at
    assert replacement.hint == "sk-proj-…NEW2"
