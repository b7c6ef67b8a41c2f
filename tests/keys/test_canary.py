"""A canary key through the whole key service: it must surface nowhere but in `reveal()`."""

import logging
import secrets
import uuid

import pytest
from django.db import connection

from swrly import keys
from swrly.keys.errors import InvalidKey, KeyServiceError
from swrly.keys.fingerprint import fingerprint
from tenants.services import provider_key_seen


def _database_text():
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            rows.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(rows)


def _redis_bytes(client):
    return b"\n".join(client.dump(name) or b"" for name in client.scan_iter(count=1000))


def test_the_canary_is_nowhere_but_in_reveal(acme, key_store, caplog):
    canary = "sk-ant-api03-canary" + secrets.token_urlsafe(40).replace("-", "x")
    tenant_id, run_id = str(acme.tenant.pk), str(uuid.uuid4())
    errors = []
    logger = logging.getLogger("swrly.tests.canary")

    with caplog.at_level(logging.DEBUG):
        keys.deposit(tenant_id=tenant_id, run_id=run_id, provider="anthropic", key=canary)
        print_ = fingerprint(provider="anthropic", key=canary)
        provider_key_seen(
            tenant=acme.tenant, provider="anthropic", fingerprint=print_.value, hint=print_.hint
        )
        raw = _redis_bytes(key_store)
        for attempt in (
            lambda: keys.deposit(
                tenant_id=tenant_id, run_id=run_id, provider="anthropic", key=canary
            ),
            lambda: keys.deposit(
                tenant_id=tenant_id, run_id="r", provider="anthropic", key=canary + "\n"
            ),
            lambda: keys.deposit(tenant_id=tenant_id, run_id="r", provider="nope", key=canary),
        ):
            with pytest.raises(KeyServiceError) as caught:
                attempt()
            errors.append(caught.value)
        secret = keys.consume(tenant_id=tenant_id, run_id=run_id, provider="anthropic")
        logger.debug("consumed %s %r %s", secret, secret, f"{secret}")
        logger.debug("provider answered: invalid x-api-key %s", secret.reveal())
        with pytest.raises(KeyServiceError) as caught:
            keys.consume(tenant_id=tenant_id, run_id=run_id, provider="anthropic")
        errors.append(caught.value)
        assert secret.reveal() == canary
        secret.discard()

    assert isinstance(errors[1], InvalidKey)
    assert canary.encode() not in raw
    assert canary not in _database_text()
    assert canary not in caplog.text
    for error in errors:
        assert canary not in str(error)
        assert canary not in repr(error)
        assert canary[-12:] not in str(error)
    # nothing is left in the key store once the run has taken its key
    assert list(key_store.scan_iter(match="swrly:byok:*")) == []
