"""One Redis URL, one redis-py client: a single server, a Sentinel-managed primary or a cluster.

    redis://[[user]:password@]host:port[/db]          one server (rediss:// for TLS; unix://)
    redis+sentinel://[[user]:password@]host:port[,host:port…]/<master>[/<db>][?options]
    redis+cluster://[[user]:password@]host:port[,host:port…][?options]
    rediss+sentinel://…, rediss+cluster://…           the same over TLS (every connection)

The hosts of a `+sentinel` URL are the sentinels; the user and password are the data nodes'
(the primary's and its replicas'). The sentinels' own credentials are the query options
`sentinel_username` and `sentinel_password`. The hosts of a `+cluster` URL are startup nodes:
the client learns the others from them. `ssl_ca_certs=<path>` names the CA bundle for TLS.

Every client built here times out connects and reads after `socket_timeout` seconds and never
retries a command: a retried SET NX or GETDEL whose first reply was lost reports the wrong
outcome. A Sentinel client asks the sentinels for the primary whenever it opens a connection
(redis-py's SentinelConnectionPool), so the call after a failed one finds a promoted replica. A
cluster client follows MOVED and ASK redirections (the command did not run) but re-raises a
connection error after refreshing its slot map, so the next call goes to the new owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
QUERY_OPTIONS = ("sentinel_username", "sentinel_password", "ssl_ca_certs")

# A client of any topology: RedisCluster offers the commands of redis.Redis that the key store
# uses, routed by key.
Client = Any


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _hosts(text: str) -> list[tuple[str, int]]:
    hosts = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("a Redis URL host must be host:port")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def _split(url: str) -> tuple[str, dict[str, Any], list[tuple[str, int]], list[str], dict]:
    """(scheme, credentials, hosts, path segments, query options) of a `+sentinel` or
    `+cluster` URL; ValueError naming what is wrong (never the URL: it may hold a password)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a Redis URL")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    credentials: dict[str, Any] = {}
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_password, password = userinfo.partition(":")
        if user:
            credentials["username"] = unquote(user)
        if has_password:
            credentials["password"] = unquote(password)
    options: dict[str, str] = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name not in QUERY_OPTIONS:
            known = ", ".join(QUERY_OPTIONS)
            raise ValueError(f"unknown Redis URL option {name!r} (known: {known})")
        options[name] = values[-1]
    return scheme, credentials, _hosts(netloc), [p for p in path.split("/") if p], options


def redis_client(url: str, *, socket_timeout: float) -> Client:
    """A redis-py client for `url` (any form in this module's docstring), with connect and read
    timeouts of `socket_timeout` seconds and no command retries. ValueError for a malformed URL;
    redis.ConnectionError when no node of a cluster answers (a cluster client reads the slot
    map as it is built; the other clients connect on first use).
    """
    scheme = url.partition("://")[0].lower()
    timeouts: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
    }
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_client(url, timeouts)
    if scheme in CLUSTER_SCHEMES:
        return _cluster_client(url, timeouts)
    return redis.Redis.from_url(url, retry=_no_retry(), **timeouts)


def _tls(scheme: str, options: dict[str, str]) -> dict[str, Any]:
    if not scheme.startswith("rediss+"):
        if "ssl_ca_certs" in options:
            raise ValueError("ssl_ca_certs needs a rediss+ URL")
        return {}
    tls: dict[str, Any] = {"ssl": True}
    if "ssl_ca_certs" in options:
        tls["ssl_ca_certs"] = options["ssl_ca_certs"]
    return tls


def _sentinel_client(url: str, timeouts: dict[str, Any]) -> redis.Redis:
    scheme, credentials, hosts, path, options = _split(url)
    if not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("a redis+sentinel URL names the master and an optional db: /<name>[/<db>]")
    tls = _tls(scheme, options)
    sentinel_kwargs: dict[str, Any] = {**timeouts, **tls, "retry": _no_retry()}
    if "sentinel_username" in options:
        sentinel_kwargs["username"] = options["sentinel_username"]
    if "sentinel_password" in options:
        sentinel_kwargs["password"] = options["sentinel_password"]
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs)
    db = int(path[1]) if len(path) == 2 else 0
    return sentinel.master_for(path[0], db=db, retry=_no_retry(), **timeouts, **tls, **credentials)


class _Cluster(RedisCluster):
    """RedisCluster whose "no node answers" (RedisClusterException, outside redis-py's
    RedisError tree) is a redis.ConnectionError like any other unreachable server's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)
        except RedisClusterException as exc:
            raise redis.ConnectionError("no cluster node answered") from exc

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise redis.ConnectionError("no cluster node answered") from exc


def _cluster_client(url: str, timeouts: dict[str, Any]) -> RedisCluster:
    scheme, credentials, hosts, path, options = _split(url)
    if path not in ([], ["0"]):
        raise ValueError("a Redis cluster has one database: a redis+cluster URL names none")
    if options.keys() & {"sentinel_username", "sentinel_password"}:
        raise ValueError("sentinel options need a redis+sentinel URL")
    return _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in hosts],
        retry=_no_retry(),  # a connection error is raised, after the slot map is refreshed
        **timeouts,
        **_tls(scheme, options),
        **credentials,
    )


def primaries(client: Client) -> list[redis.Redis]:
    """A plain client of every primary behind `client`: the cluster's primaries, one each
    (their replies are per node: SCAN, CONFIG GET, scripts), or `client` itself."""
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def clients_by_key(client: Client, keys: Iterable[str]) -> list[tuple[redis.Redis, list[str]]]:
    """`keys` grouped by the primary that holds them, with a plain client of it: for pipelines
    that must go to one node each and never be retried (a cluster pipeline resends a command
    whose connection failed). A single server or Sentinel primary holds them all."""
    keys = list(keys)
    if not isinstance(client, RedisCluster):
        return [(client, keys)] if keys else []
    groups: dict[str, tuple[redis.Redis, list[str]]] = {}
    for key in keys:
        node = client.get_node_from_key(key)
        if node.name not in groups:
            groups[node.name] = (client.get_redis_connection(node), [])
        groups[node.name][1].append(key)
    return list(groups.values())


def is_cluster(client: Client) -> bool:
    """Whether `client` is a cluster's (keys spread over nodes; one database)."""
    return isinstance(client, RedisCluster)


def display_url(url: str) -> str:
    """`url` with its passwords (`user:password@`, `?sentinel_password=`) shown as `***`, for
    messages that say which server is used."""
    parts = original = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hosts}")
    query = "&".join(
        f"{name}=***" if "password" in name else f"{name}{sep}{value}"
        for name, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    parts = parts._replace(query=query)
    return url if parts == original else urlunsplit(parts)
