"""A Sentinel failover: while the primary is down a key-store call fails as KeyStoreUnavailable
(never a wrong answer), and once a replica is promoted the next call finds it. A cluster
primary that is down makes its own slots unavailable, never the others'."""

import uuid

import pytest
import redis

from swrly import keys
from swrly.dev.valkey_ha import start_cluster, start_sentinel_group
from swrly.keys.store import get_client, redis_key

KEY = "sk-ant-canary-failover-0123456789"


@pytest.fixture
def group():
    started = start_sentinel_group()
    yield started
    started.stop()


def test_the_key_store_rediscovers_the_primary_after_a_failover(group, settings):
    # given: two tokens, replicated to the replica
    settings.BYOK_REDIS_URL = group.url
    tenant, first, second = (str(uuid.uuid4()) for _ in range(3))
    for run_id in (first, second):
        keys.deposit(tenant_id=tenant, run_id=run_id, provider="anthropic", key=KEY + run_id)
    old = group.primary()
    old.client().execute_command("WAIT", 1, 5000)

    # when: the primary dies
    group.kill_primary()

    # then: until a replica is promoted, every operation fails as unavailable
    for operation in (
        lambda: keys.consume(tenant_id=tenant, run_id=first, provider="anthropic"),
        lambda: keys.deposit(
            tenant_id=tenant, run_id=str(uuid.uuid4()), provider="anthropic", key=KEY
        ),
        lambda: keys.discard(tenant_id=tenant, run_id=second, provider="anthropic"),
    ):
        with pytest.raises(keys.KeyStoreUnavailable) as caught:
            operation()
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
        assert KEY not in str(caught.value)

    # and after the failover the same client finds the new primary, with both tokens
    promoted = group.wait_for_failover()
    assert promoted is not old
    with keys.consume(tenant_id=tenant, run_id=first, provider="anthropic") as secret:
        assert secret.reveal() == KEY + first
    with pytest.raises(keys.TokenMissing):
        keys.consume(tenant_id=tenant, run_id=first, provider="anthropic")
    assert keys.discard(tenant_id=tenant, run_id=second, provider="anthropic") is True
    run_id = str(uuid.uuid4())
    keys.deposit(tenant_id=tenant, run_id=run_id, provider="anthropic", key=KEY)
    assert promoted.client().exists(
        redis_key(tenant_id=tenant, run_id=run_id, provider="anthropic")
    )


def test_a_dead_cluster_primary_fails_its_own_tokens_only(settings):
    cluster = start_cluster()
    try:
        settings.BYOK_REDIS_URL = cluster.url
        tenant = str(uuid.uuid4())
        runs = [str(uuid.uuid4()) for _ in range(30)]
        for run_id in runs:
            keys.deposit(tenant_id=tenant, run_id=run_id, provider="openai", key=KEY + run_id)
        dead = cluster.nodes[1]
        client = get_client()
        on_dead = {
            run_id
            for run_id in runs
            if client.get_node_from_key(
                redis_key(tenant_id=tenant, run_id=run_id, provider="openai")
            ).port
            == dead.port
        }
        assert 0 < len(on_dead) < len(runs)
        dead.kill()
        for run_id in runs:
            if run_id in on_dead:
                with pytest.raises(keys.KeyStoreUnavailable):
                    keys.consume(tenant_id=tenant, run_id=run_id, provider="openai")
            else:
                with keys.consume(tenant_id=tenant, run_id=run_id, provider="openai") as secret:
                    assert secret.reveal() == KEY + run_id
    finally:
        cluster.stop()
