"""The session's key store is on the topology SWRLY_TEST_KEY_STORE names (.ci/run runs the key
and run suites on each)."""

import os

from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool

from swrly.keys.store import get_client


def test_the_session_key_store_is_on_the_requested_topology(settings):
    client = get_client()
    topology = os.environ.get("SWRLY_TEST_KEY_STORE", "")
    assert isinstance(client, RedisCluster) == (topology == "cluster")
    is_sentinel = isinstance(getattr(client, "connection_pool", None), SentinelConnectionPool)
    assert is_sentinel == (topology == "sentinel")
    assert settings.BYOK_REDIS_URL.startswith(
        {"cluster": "redis+cluster://", "sentinel": "redis+sentinel://"}.get(topology, "redis://")
    )
    assert client.ping()
