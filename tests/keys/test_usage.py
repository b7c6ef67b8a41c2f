"""The AES-GCM usage budget: every seal counted, exactly, durably, and reported.

Against the test session's real Valkey (the key store) and the real database (the ledger).
"""

import io
import threading
import uuid

import pytest
import redis
import redis.connection
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from swrly import keys
from swrly.checks import check_key_usage
from swrly.custody.key_usage import encryption_key_usage, encryption_key_usage_record
from swrly.custody.models import EncryptionKeyUsage
from swrly.custody.tasks import record_key_usage
from swrly.keys.keyring import get_keyring
from swrly.keys.store import DEPOSIT_SHA, _run_deposit_script, get_client, redis_key, shard
from swrly.keys.usage import (
    LEGACY_USAGE_KEY,
    SAFE_LIMIT,
    USAGE_KEYS,
    pending_seals,
    settle_seals,
    usage_key,
)
from tests.keys.conftest import new_key

KEY = "sk-proj-canary" + "0" * 30


def _deposit(tenant_id, n, provider="openai"):
    for _ in range(n):
        keys.deposit(tenant_id=tenant_id, run_id=str(uuid.uuid4()), provider=provider, key=KEY)


def _usage():
    return {row.key_id: row for row in encryption_key_usage()}


def _rotate(*args):
    out = io.StringIO()
    call_command("rotate-keys", *args, stdout=out)
    return out.getvalue()


def _usage_line(out, key_id):
    """The key's line in the usage section of `rotate-keys --dry-run/--check`, split."""
    section = out.split("Tokens sealed per encryption key id", 1)[1]
    return next(line for line in section.splitlines() if line.startswith(f"  {key_id}  ")).split()


def test_each_deposit_is_counted_under_the_key_that_sealed_it(acme, key_store):
    current = get_keyring().current.key_id_hex
    _deposit(str(acme.tenant.pk), 7)
    assert pending_seals(key_store) == {current: 7}
    assert _usage()[current].sealed == 7
    assert _usage()[current].role == "current"


def test_a_refused_deposit_still_counts_its_seal(acme, key_store):
    # SET NX refuses the second token, but its nonce was drawn all the same.
    current = get_keyring().current.key_id_hex
    run_id = str(uuid.uuid4())
    keys.deposit(tenant_id=str(acme.tenant.pk), run_id=run_id, provider="openai", key=KEY)
    with pytest.raises(keys.TokenExists):
        keys.deposit(tenant_id=str(acme.tenant.pk), run_id=run_id, provider="openai", key=KEY)
    assert pending_seals(key_store) == {current: 2}


def test_concurrent_deposits_from_many_threads_are_counted_exactly(acme, key_store):
    current = get_keyring().current.key_id_hex
    tenant_id = str(acme.tenant.pk)
    threads = [threading.Thread(target=_deposit, args=(tenant_id, 25)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pending_seals(key_store) == {current: 200}


def test_the_ledger_keeps_the_count_when_the_key_store_forgets(acme, key_store):
    # given: seals counted in the key store, then moved by the beat task
    current = get_keyring().current.key_id_hex
    _deposit(str(acme.tenant.pk), 5)
    assert record_key_usage() == 5
    assert EncryptionKeyUsage.objects.get(key_id=current).sealed == 5
    assert pending_seals(key_store) == {}
    # when: the key store restarts empty (it keeps nothing on disk), and more seals follow
    key_store.flushdb()
    _deposit(str(acme.tenant.pk), 3)
    # then: the total is the ledger's plus the new pending seals
    row = _usage()[current]
    assert (row.recorded, row.pending, row.sealed) == (5, 3, 8)
    encryption_key_usage_record()
    assert EncryptionKeyUsage.objects.get(key_id=current).sealed == 8


def test_two_moves_of_the_same_reading_never_lose_or_double_the_total(acme, key_store):
    # Two movers (beat and rotate-keys) read the same pending count; each adds it to the ledger
    # and subtracts it from the key store: ledger + pending stays the true total throughout.
    current = get_keyring().current.key_id_hex
    _deposit(str(acme.tenant.pk), 4)
    reading = pending_seals(key_store)
    encryption_key_usage_record()  # the first mover, complete
    EncryptionKeyUsage.objects.filter(key_id=current).update(sealed=4 + 4)  # the second adds
    settle_seals(key_store, reading)  # and subtracts its reading
    assert pending_seals(key_store) == {current: -4}
    assert _usage()[current].sealed == 4
    encryption_key_usage_record()
    assert EncryptionKeyUsage.objects.get(key_id=current).sealed == 4


def test_rewraps_are_counted_under_the_new_key(acme, key_store, settings):
    old_id = get_keyring().current.key_id_hex
    _deposit(str(acme.tenant.pk), 6)
    old = settings.BYOK_ENCRYPTION_KEY
    settings.BYOK_ENCRYPTION_KEY = new_key()
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [old]
    new_id = get_keyring().current.key_id_hex

    out = _rotate()

    assert "rewrapped 6" in out
    # rotate-keys moves the counts into the ledger itself
    ledger = dict(EncryptionKeyUsage.objects.values_list("key_id", "sealed"))
    assert ledger == {old_id: 6, new_id: 6}
    usage = _usage()
    assert (usage[old_id].role, usage[new_id].role) == ("fallback", "current")
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = []
    assert _usage()[old_id].role == "retired"  # retired keys stay listed


def test_dry_run_and_check_show_the_count_and_the_share_of_the_budget(acme, key_store):
    current = get_keyring().current.key_id_hex
    _deposit(str(acme.tenant.pk), 3)
    for mode in ("--dry-run", "--check"):
        out = _rotate(mode)
        assert _usage_line(out, current) == [current, "3", "0.00%", "current", "ok"]
    # a current key at the warning mark is named
    EncryptionKeyUsage.objects.filter(key_id=current).update(sealed=2**30)
    out = _rotate("--dry-run")
    assert _usage_line(out, current) == [current, str(2**30), "25.00%", "current", "warning"]
    assert "generate a new key" in out


def test_the_check_warns_from_the_setting_and_fails_at_two_to_the_32(acme, key_store, settings):
    current = get_keyring().current.key_id_hex
    assert check_key_usage() == []
    _deposit(str(acme.tenant.pk), 1)
    encryption_key_usage_record()
    EncryptionKeyUsage.objects.filter(key_id=current).update(sealed=2**30 - 2)
    assert check_key_usage() == []
    _deposit(str(acme.tenant.pk), 1)  # pending in the key store: 2**30 - 1
    assert check_key_usage() == []
    _deposit(str(acme.tenant.pk), 1)  # 2**30: the default warning mark
    [warning] = check_key_usage()
    assert warning.id == "swrly.W014"
    assert current in warning.msg
    settings.BYOK_KEY_USAGE_WARN_AT = 2**31
    assert check_key_usage() == []
    EncryptionKeyUsage.objects.filter(key_id=current).update(sealed=SAFE_LIMIT - 3)
    [warning] = check_key_usage()  # 2**32 - 3 recorded + 2 pending
    assert warning.id == "swrly.W014"
    _deposit(str(acme.tenant.pk), 1)  # 2**32
    [error] = check_key_usage()
    assert error.id == "swrly.E008"
    assert error.is_serious()
    # rotating is the way out: a new current key starts a new budget, and rotate-keys still runs
    out = io.StringIO()
    call_command("rotate-keys", "--dry-run", stdout=out, skip_checks=False)
    assert _usage_line(out.getvalue(), current)[-1] == "exhausted"
    with pytest.raises(SystemCheckError, match=r"swrly\.E008"):
        call_command("check", tags=["swrly_key_usage"])
    old = settings.BYOK_ENCRYPTION_KEY
    settings.BYOK_ENCRYPTION_KEY = new_key()
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [old]
    assert check_key_usage() == []


def test_a_bad_warning_mark_is_an_error(db, key_store, settings):
    for value in (0, SAFE_LIMIT):
        settings.BYOK_KEY_USAGE_WARN_AT = value
        assert [e.id for e in check_key_usage()] == ["swrly.E009"]


def test_an_unreachable_key_store_shows_the_ledger_as_a_lower_bound(acme, key_store, settings):
    current = get_keyring().current.key_id_hex
    _deposit(str(acme.tenant.pk), 2)
    encryption_key_usage_record()
    settings.BYOK_REDIS_URL = "redis://127.0.0.1:1/0"
    row = _usage()[current]
    assert (row.sealed, row.pending) == (2, None)


def test_the_counter_is_not_a_token_key(acme, key_store):
    # The sweeps and rotate-keys scan token keys only: the counter must never match them.
    from swrly.keys.rotation import count_live_tokens

    run_id = str(uuid.uuid4())
    keys.deposit(tenant_id=str(acme.tenant.pk), run_id=run_id, provider="openai", key=KEY)
    _deposit(str(acme.tenant.pk), 1)
    assert get_client().type(usage_key(shard(str(acme.tenant.pk), run_id))) == b"hash"
    assert sum(count_live_tokens().values()) == 2


def test_counts_spread_over_the_shards_are_summed_and_settled_shard_by_shard(acme, key_store):
    current = get_keyring().current.key_id_hex
    _deposit(str(acme.tenant.pk), 40)
    reading = pending_seals(key_store)
    assert reading == {current: 40}
    assert len(reading.readings) > 10  # 40 runs over 256 shards
    assert set(reading.readings) <= set(USAGE_KEYS)
    _deposit(str(acme.tenant.pk), 2)  # counted after the reading: kept by the settlement
    settle_seals(key_store, reading)
    assert pending_seals(key_store) == {current: 2}


def test_counts_under_the_previous_releases_hash_are_read_and_settled(acme, key_store):
    # An upgrade: a process of the previous release counted in the one unsharded hash.
    current = get_keyring().current.key_id_hex
    key_store.hincrby(LEGACY_USAGE_KEY, current, 5)
    _deposit(str(acme.tenant.pk), 1)
    assert encryption_key_usage_record() == {current: 6}
    assert EncryptionKeyUsage.objects.get(key_id=current).sealed == 6
    assert pending_seals(key_store) == {}
    assert int(key_store.hget(LEGACY_USAGE_KEY, current)) == 0


def test_a_deposit_counts_and_stores_in_one_round_trip_of_one_command(key_store, monkeypatch):
    sent: list[bytes] = []
    original = redis.connection.Connection.send_packed_command

    def spy(self, command, check_health=True):
        packed = command if isinstance(command, bytes) else b"".join(command)
        sent.append(packed)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", spy)
    current = get_keyring().current.key_id_hex
    tenant_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
    keys.deposit(tenant_id=tenant_id, run_id=run_id, provider="openai", key=KEY)
    monkeypatch.undo()

    assert len(sent) == 1
    # One command of 8 parts: EVALSHA sha 2 usage-key token-key key-id token ttl.
    assert sent[0].startswith(b"*8\r\n$7\r\nEVALSHA\r\n")
    assert pending_seals(key_store) == {current: 1}
    assert key_store.ttl(redis_key(tenant_id=tenant_id, run_id=run_id, provider="openai")) > 0


def test_a_flushed_script_cache_is_reloaded_and_the_deposit_still_counts(key_store):
    current = get_keyring().current.key_id_hex
    tenant_id = str(uuid.uuid4())
    _deposit(tenant_id, 1)
    key_store.script_flush()
    assert key_store.script_exists(DEPOSIT_SHA) == [False]

    _deposit(tenant_id, 2)

    assert key_store.script_exists(DEPOSIT_SHA) == [True]
    assert pending_seals(key_store) == {current: 3}
    assert len(list(key_store.scan_iter(match="swrly:byok:v1:*"))) == 3


def test_the_deposit_script_never_overwrites_and_still_counts(key_store):
    current = get_keyring().current.key_id_hex
    name = redis_key(tenant_id="t-1", run_id="r-1", provider="openai")
    tag = shard("t-1", "r-1")
    assert _run_deposit_script(key_store, tag, name, current, b"first", 60) == 1
    assert _run_deposit_script(key_store, tag, name, current, b"second", 60) == 0
    assert key_store.get(name) == b"first"
    assert 0 < key_store.ttl(name) <= 60
    assert pending_seals(key_store) == {current: 2}
