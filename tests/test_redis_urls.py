"""swrly.redis_urls: one parser for every Redis URL form, building clients that never retry."""

import pytest
import redis
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from swrly.dev.valkey_ha import start_cluster
from swrly.redis_urls import clients_by_key, primaries, redis_client


def test_a_plain_url_gives_a_client_with_timeouts_and_no_retries():
    client = redis_client("redis://:pw@127.0.0.1:6390/3", socket_timeout=2)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (3, "pw", 2)
    assert kwargs["socket_connect_timeout"] == 2
    assert kwargs["retry"].get_retries() == 0
    assert primaries(client) == [client]
    assert clients_by_key(client, ["a", "b"]) == [(client, ["a", "b"])]


def test_a_sentinel_url_names_the_sentinels_the_master_the_db_and_both_credentials():
    client = redis_client(
        "redis+sentinel://app:p%40ss@127.0.0.1:26379,127.0.0.1:26380/keys/2"
        "?sentinel_username=watch&sentinel_password=s3cret",
        socket_timeout=1.5,
    )
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "keys"
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "p@ss", 2)
    assert (kwargs["socket_timeout"], kwargs["retry"].get_retries()) == (1.5, 0)
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380]
    sentinel_kwargs = sentinels[0].connection_pool.connection_kwargs
    assert (sentinel_kwargs["username"], sentinel_kwargs["password"]) == ("watch", "s3cret")
    assert sentinel_kwargs["retry"].get_retries() == 0
    assert pool.connection_class is not SentinelManagedSSLConnection


def test_a_rediss_sentinel_url_uses_tls_to_sentinels_and_data_nodes():
    client = redis_client(
        "rediss+sentinel://127.0.0.1:26379/keys?ssl_ca_certs=/etc/ca.pem", socket_timeout=2
    )
    pool = client.connection_pool
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert pool.connection_kwargs["db"] == 0
    assert (
        pool.sentinel_manager.sentinels[0].connection_pool.connection_class is redis.SSLConnection
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "names the master"),
        ("redis+sentinel://127.0.0.1:26379/keys/x", "names the master"),
        ("redis+sentinel://127.0.0.1/keys", "host:port"),
        ("redis+sentinel://127.0.0.1:26379/keys?ssl=true", "unknown Redis URL option 'ssl'"),
        ("redis+sentinel://127.0.0.1:1/k?ssl_ca_certs=/ca", r"needs a rediss\+"),
        ("redis+cluster://127.0.0.1:7000/1", "one database"),
        ("redis+cluster://127.0.0.1:7000?sentinel_password=x", r"need a redis\+sentinel"),
    ],
)
def test_malformed_urls_are_refused_without_echoing_a_password(url, message):
    with pytest.raises(ValueError, match=message) as caught:
        redis_client(url.replace("://", "://u:hunter22@"), socket_timeout=2)
    assert "hunter22" not in str(caught.value)


def test_a_cluster_url_reaches_every_primary_and_groups_keys_by_node():
    cluster = start_cluster()
    try:
        client = redis_client(cluster.url, socket_timeout=2)
        assert isinstance(client, RedisCluster)
        nodes = primaries(client)
        assert sorted(n.connection_pool.connection_kwargs["port"] for n in nodes) == sorted(
            node.port for node in cluster.nodes
        )
        assert all(n.connection_pool.connection_kwargs["socket_timeout"] == 2 for n in nodes)
        keys = [f"k{i}" for i in range(50)]
        groups = clients_by_key(client, keys)
        assert len(groups) == 3
        assert sorted(k for _, group in groups for k in group) == sorted(keys)
        for node, group in groups:
            pipe = node.pipeline(transaction=False)
            for key in group:
                pipe.set(key, key)
            assert pipe.execute() == [True] * len(group)  # every key on its own node: no MOVED
        assert redis_client(cluster.url + "/0", socket_timeout=2).get("k7") == b"k7"
    finally:
        cluster.stop()


def test_a_cluster_no_node_answers_is_a_connection_error():
    with pytest.raises(redis.ConnectionError):
        redis_client("redis+cluster://127.0.0.1:1", socket_timeout=1)
