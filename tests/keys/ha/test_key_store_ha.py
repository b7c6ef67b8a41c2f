"""The key store on a Sentinel group and on a cluster: deposit, consume, discard, usage,
rotation, the orphan sweep and the hygiene checks, each against real servers."""

import uuid
from collections import Counter

import pytest

from runs.models import Run, RunStatus
from runs.services import orphan_tokens_sweep
from swrly import keys
from swrly.audit.models import AuditEvent
from swrly.audit.verifier import audit_verify_chain
from swrly.audit.writer import chain_for
from swrly.checks import check_key_store
from swrly.custody.key_usage import encryption_key_usage_record
from swrly.custody.models import EncryptionKeyUsage
from swrly.keys.keyring import get_keyring
from swrly.keys.rotation import count_live_tokens, rewrap_live_tokens
from swrly.keys.store import KEY_PATTERN, get_client, redis_key
from swrly.keys.tokens import token_key_id
from swrly.keys.usage import pending_seals
from tests.keys.conftest import new_key

KEY = "sk-ant-canary-ha-0123456789abcdef"


def _deposit(tenant_id, runs, provider="anthropic"):
    for run_id in runs:
        keys.deposit(tenant_id=tenant_id, run_id=run_id, provider=provider, key=f"{KEY}{run_id}")


def _primaries(topology):
    """The data nodes that take writes: every cluster node, or the Sentinel group's primary."""
    return topology.nodes if hasattr(topology, "nodes") else [topology.primary()]


def _tokens_per_node(topology):
    return [len(list(node.client().scan_iter(match=KEY_PATTERN))) for node in _primaries(topology)]


def test_deposit_consume_discard_and_usage(ha_store):
    tenant, runs = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
    current = get_keyring().current.key_id_hex
    _deposit(tenant, runs)
    with pytest.raises(keys.TokenExists):
        _deposit(tenant, runs[:1])
    with keys.consume(tenant_id=tenant, run_id=runs[0], provider="anthropic") as secret:
        assert secret.reveal() == f"{KEY}{runs[0]}"
    with pytest.raises(keys.TokenMissing):
        keys.consume(tenant_id=tenant, run_id=runs[0], provider="anthropic")
    assert keys.discard(tenant_id=tenant, run_id=runs[1], provider="anthropic") is True
    assert keys.discard(tenant_id=tenant, run_id=runs[1], provider="anthropic") is False
    assert sum(_tokens_per_node(ha_store)) == 1
    assert pending_seals(get_client()) == {current: 4}  # the refused deposit counts too


def test_a_flushed_script_cache_on_every_node_is_reloaded(ha_store):
    current = get_keyring().current.key_id_hex
    tenant = str(uuid.uuid4())
    _deposit(tenant, [str(uuid.uuid4())])
    for node in _primaries(ha_store):
        node.client().script_flush()
    _deposit(tenant, [str(uuid.uuid4()) for _ in range(20)])
    assert pending_seals(get_client()) == {current: 21}


def test_rotation_rewraps_tokens_on_every_primary_and_counts_each_seal(ha_store, db, settings):
    # given: tokens of many runs, spread over every primary
    tenant, runs = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(60)]
    old_id = get_keyring().current.key_id_hex
    _deposit(tenant, runs)
    per_node = _tokens_per_node(ha_store)
    assert sum(per_node) == 60
    assert all(count > 0 for count in per_node)
    # when: a new current key, the old one a fallback, and a rotation in small batches
    old = settings.BYOK_ENCRYPTION_KEY
    settings.BYOK_ENCRYPTION_KEY = new_key()
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [old]
    new_id = get_keyring().current.key_id_hex
    report = rewrap_live_tokens(batch_size=7)
    # then: every token on every node is under the new key, each seal counted once
    assert (report.scanned, report.rewrapped, report.failed) == (60, 60, 0)
    assert count_live_tokens() == Counter({new_id: 60})
    assert rewrap_live_tokens().rewrapped == 0
    assert pending_seals(get_client()) == {old_id: 60, new_id: 60}
    assert encryption_key_usage_record() == {old_id: 60, new_id: 60}
    assert dict(EncryptionKeyUsage.objects.values_list("key_id", "sealed")) == {
        old_id: 60,
        new_id: 60,
    }
    assert pending_seals(get_client()) == {}
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = []
    for run_id in runs[:5]:
        token = get_client().get(redis_key(tenant_id=tenant, run_id=run_id, provider="anthropic"))
        assert token_key_id(token).hex() == new_id
        with keys.consume(tenant_id=tenant, run_id=run_id, provider="anthropic") as secret:
            assert secret.reveal() == f"{KEY}{run_id}"


def test_the_sweep_deletes_tokens_of_runs_no_longer_queued(ha_store, acme):
    # A failover can bring back a token whose GETDEL the old primary never replicated: its run
    # is claimed or finished, and the token is still there. The sweep scans every primary.
    queued, claimed, finished = acme.run(), acme.run(), acme.run()
    Run.objects.filter(pk=claimed.pk).update(status=RunStatus.RUNNING)
    Run.objects.filter(pk=finished.pk).update(status=RunStatus.FAILED)
    tenant = str(acme.tenant.pk)
    _deposit(tenant, [str(run.pk) for run in (queued, claimed, finished)])

    assert orphan_tokens_sweep(min_idle=0) == 2

    def exists(run):
        name = redis_key(tenant_id=tenant, run_id=run.pk, provider="anthropic")
        return bool(get_client().exists(name))

    assert (exists(queued), exists(claimed), exists(finished)) == (True, False, False)
    events = AuditEvent.objects.filter(tenant=acme.tenant, action="key.discarded")
    assert sorted(e.target for e in events) == sorted(f"run:{r.pk}" for r in (claimed, finished))
    reasons = sorted(e.metadata["reason"] for e in events)
    assert reasons == [
        "the run is failed: the token came back after it was taken",
        "the run is running: the token came back after it was taken",
    ]
    for event in events:
        assert KEY not in str(event.metadata)
    assert audit_verify_chain(chain_for(acme.tenant)).ok
    assert orphan_tokens_sweep(min_idle=0) == 0


def test_the_hygiene_check_reads_every_primary(ha_store):
    assert check_key_store() == []
    last = _primaries(ha_store)[-1].client()
    last.config_set("save", "3600 1")
    try:
        assert [message.id for message in check_key_store()] == ["swrly.W011"]
    finally:
        last.config_set("save", "")
