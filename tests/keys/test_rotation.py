"""`rotate-keys`: rewrap to the current key, keep TTLs, lose nothing, resurrect nothing."""

import io
import threading
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from swrly import keys
from swrly.audit.models import AuditEvent
from swrly.custody.models import KeyRotation, KeyRotationTenant, RotationOutcome
from swrly.keys.keyring import get_keyring, parse_keyring
from swrly.keys.rotation import rewrap_live_tokens
from swrly.keys.store import get_client, redis_key
from swrly.keys.tokens import token_key_id
from tests.keys.conftest import new_key


def _rotate(*args):
    out = io.StringIO()
    call_command("rotate-keys", *args, stdout=out)
    return out.getvalue()


def _deposit(tenant_id, n, provider="openai"):
    runs = [str(uuid.uuid4()) for _ in range(n)]
    for i, run_id in enumerate(runs):
        keys.deposit(
            tenant_id=tenant_id, run_id=run_id, provider=provider, key=f"sk-proj-canary{i:030d}"
        )
    return runs


def _promote(settings, new):
    """Step 2 of the rollout: the new key becomes current, the old one a fallback."""
    old = settings.BYOK_ENCRYPTION_KEY
    settings.BYOK_ENCRYPTION_KEY = new
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [old]
    return old


def test_rotation_rewraps_every_token_and_the_old_key_can_then_retire(
    acme, globex, key_store, settings
):
    acme_runs = _deposit(str(acme.tenant.pk), 30)
    globex_runs = _deposit(str(globex.tenant.pk), 5)
    old_id = get_keyring().current.key_id_hex
    new = new_key()
    _promote(settings, new)
    new_id = get_keyring().current.key_id_hex

    with pytest.raises(CommandError, match="35 live token"):
        _rotate("--check")
    out = _rotate()

    assert "scanned 35, rewrapped 35" in out
    for run_id in acme_runs[:3]:
        token = key_store.get(
            redis_key(tenant_id=str(acme.tenant.pk), run_id=run_id, provider="openai")
        )
        assert token_key_id(token).hex() == new_id
    assert "can be retired" in _rotate("--check")
    # step 5: retire the old key; every token is still readable
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = []
    for i, run_id in enumerate(acme_runs):
        secret = keys.consume(tenant_id=str(acme.tenant.pk), run_id=run_id, provider="openai")
        assert secret.reveal() == f"sk-proj-canary{i:030d}"

    rotation = KeyRotation.objects.get()
    assert rotation.outcome == RotationOutcome.SUCCEEDED
    assert (rotation.scanned, rotation.rewrapped, rotation.failed) == (35, 35, 0)
    assert rotation.from_key_ids == [old_id]
    assert rotation.to_key_id == new_id
    per_tenant = dict(KeyRotationTenant.objects.values_list("tenant__slug", "rewrapped"))
    assert per_tenant == {"acme": 30, "globex": 5}
    event = AuditEvent.objects.get(tenant=acme.tenant, action="encryption_key.rotated")
    assert event.metadata == {"from_key_ids": [old_id], "to_key_id": new_id, "rewrapped": 30}
    assert globex_runs


def test_rewrap_keeps_the_remaining_ttl(acme, key_store, settings):
    (run_id,) = _deposit(str(acme.tenant.pk), 1)
    name = redis_key(tenant_id=str(acme.tenant.pk), run_id=run_id, provider="openai")
    key_store.pexpire(name, 300_000)
    before = key_store.pttl(name)
    _promote(settings, new_key())
    _rotate()
    after = key_store.pttl(name)
    assert before - 5_000 < after <= before


def test_dry_run_counts_per_key_id_and_changes_nothing(acme, key_store, settings):
    runs = _deposit(str(acme.tenant.pk), 4)
    old_id = get_keyring().current.key_id_hex
    name = redis_key(tenant_id=str(acme.tenant.pk), run_id=runs[0], provider="openai")
    before = key_store.get(name)
    _promote(settings, new_key())
    _deposit(str(acme.tenant.pk), 2)

    out = _rotate("--dry-run")

    assert f"{old_id}         4  fallback or retired" in out
    assert f"{get_keyring().current.key_id_hex}         2  current" in out
    assert key_store.get(name) == before
    assert not KeyRotation.objects.exists()


def test_a_token_under_a_retired_key_fails_the_rotation(acme, key_store, settings):
    _deposit(str(acme.tenant.pk), 2)
    settings.BYOK_ENCRYPTION_KEY = new_key()  # the old key is gone without a rollout
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = []
    with pytest.raises(CommandError, match="2 token"):
        _rotate()
    rotation = KeyRotation.objects.get()
    assert rotation.outcome == RotationOutcome.FAILED
    assert rotation.failed == 2


def test_generate_prints_a_usable_key_and_the_safe_order():
    out = _rotate("--generate")
    key = out.split("\n\n")[1].strip()
    assert parse_keyring(key, []).current.key_id_hex
    steps = [
        line for line in out.splitlines() if line.strip()[:2] in {"1.", "2.", "3.", "4.", "5."}
    ]
    assert len(steps) == 5
    assert "FALLBACKS" in steps[0]
    assert "rotate-keys --check" in out


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_rotation_racing_consumers_loses_nothing_and_resurrects_nothing(
    attempt, key_store, settings
):
    tenant_id = str(uuid.uuid4())  # the race concerns Redis; no tenant rows needed
    runs = _deposit(tenant_id, 600)
    _promote(settings, new_key())
    keyring = get_keyring()
    consumed, failures, reports = [], [], []
    start = threading.Barrier(5)

    def consumer(share):
        start.wait()
        for run_id in share:
            try:
                secret = keys.consume(tenant_id=tenant_id, run_id=run_id, provider="openai")
                consumed.append(secret.reveal())
            except Exception as exc:
                failures.append(exc)

    def rotator():
        start.wait()
        from swrly.keys.rotation import rewrap_live_tokens

        reports.append(rewrap_live_tokens(keyring=keyring, batch_size=25))

    # consumers take every other token, interleaved with the rotation's batches
    threads = [threading.Thread(target=consumer, args=(runs[i::8],)) for i in range(0, 8, 2)]
    threads.append(threading.Thread(target=rotator))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert len(consumed) == len(set(consumed)) == 300
    # the 300 tokens no consumer touched were all rewrapped; none failed
    assert 300 <= reports[0].rewrapped <= 600
    assert reports[0].failed == 0
    # the other half is intact and readable with the current key alone
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = []
    rest = [run_id for i, run_id in enumerate(runs) if (i % 8) % 2 == 1]
    for run_id in rest:
        keys.consume(tenant_id=tenant_id, run_id=run_id, provider="openai")
    # nothing consumed came back
    assert list(get_client().scan_iter(match=f"*{tenant_id}*")) == []


def test_a_script_cache_flushed_during_a_rotation_costs_no_token(acme, key_store, settings):
    runs = _deposit(str(acme.tenant.pk), 12)
    _promote(settings, new_key())
    new_id = get_keyring().current.key_id
    flushes = []

    def flush_after_each_batch(report):
        key_store.script_flush()  # as a restarted or flushed Valkey would
        flushes.append(report.rewrapped)

    report = rewrap_live_tokens(batch_size=5, progress=flush_after_each_batch)

    assert (report.scanned, report.rewrapped, report.changed, report.failed) == (12, 12, 0, 0)
    assert len(flushes) >= 2  # later batches found no script, and loaded it again
    for run_id in runs:
        name = redis_key(tenant_id=str(acme.tenant.pk), run_id=run_id, provider="openai")
        assert token_key_id(key_store.get(name)) == new_id


def test_rotation_records_which_runs_stored_keys_it_rewrapped_per_batch_and_tenant(
    acme, globex, key_store, settings
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    acme_runs = _deposit(str(acme.tenant.pk), 25)
    globex_runs = _deposit(str(globex.tenant.pk), 5, provider="anthropic")
    old_id = get_keyring().current.key_id_hex
    _promote(settings, new_key())
    new_id = get_keyring().current.key_id_hex

    with CaptureQueriesContext(connection) as queries:
        assert "rewrapped 30," in _rotate("--batch-size", "10")

    rotation = KeyRotation.objects.get()
    mine = AuditEvent.objects.filter(tenant=acme.tenant, action="key.rewrapped")
    assert sorted(e.target for e in mine) == sorted(f"run:{run_id}" for run_id in acme_runs)
    assert {(e.metadata["provider"], e.metadata["from_key_id"]) for e in mine} == {
        ("openai", old_id)
    }
    assert {e.metadata["to_key_id"] for e in mine} == {new_id}
    assert {e.metadata["rotation"] for e in mine} == {str(rotation.pk)}
    theirs = AuditEvent.objects.filter(tenant=globex.tenant, action="key.rewrapped")
    assert sorted(e.target for e in theirs) == sorted(f"run:{run_id}" for run_id in globex_runs)
    # appended per batch and tenant (bulk inserts), not one statement per stored key
    table = AuditEvent._meta.db_table
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    event_inserts = [sql for sql in inserts if f'"{table}"' in sql]
    # at most (batches: 3, or one more per extra Cluster primary) x 2 tenants, + 2 rotated
    assert 0 < len(event_inserts) <= 16
    assert len(event_inserts) < 30
