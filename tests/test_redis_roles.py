"""The hygiene checks of each Redis role (key store, broker, cache), against real Valkey servers
configured as each case needs: the broker must keep its queue and never evict it, and the key
store must not share a server with the broker (nor, a note, with the cache)."""

import io
import socket

import pytest
from django.core.management import call_command

from swrly.checks import check_broker, check_redis_roles, redis_server
from swrly.dev.devstack import start_embedded_valkey

DURABLE = {"appendonly": "yes", "save": "", "maxmemory-policy": "noeviction"}


def _ids(messages):
    return sorted(m.id for m in messages)


@pytest.fixture
def valkey_with():
    servers = []

    def start(**config):
        server = start_embedded_valkey(config)
        servers.append(server)
        return server.connection_url

    yield start
    for server in servers:
        server.stop()


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_durable_broker_that_never_evicts_passes(settings, valkey_with):
    settings.CELERY_BROKER_URL = valkey_with(**DURABLE) + "/0"
    assert check_broker() == []


def test_rdb_snapshots_count_as_keeping_the_queue(settings, valkey_with):
    settings.CELERY_BROKER_URL = valkey_with(save="60 1", appendonly="no") + "/0"
    assert check_broker() == []


def test_a_broker_that_keeps_nothing_on_disk_is_warned_about(settings, valkey_with):
    settings.CELERY_BROKER_URL = valkey_with(save="", appendonly="no") + "/0"
    (warning,) = check_broker()
    assert warning.id == "swrly.W021"
    assert "restart loses" in warning.msg


def test_a_broker_that_evicts_is_warned_about(settings, valkey_with):
    settings.CELERY_BROKER_URL = (
        valkey_with(**{**DURABLE, "maxmemory": "64mb", "maxmemory-policy": "allkeys-lru"}) + "/0"
    )
    (warning,) = check_broker()
    assert warning.id == "swrly.W022"
    assert "allkeys-lru" in warning.msg


def test_a_broker_that_refuses_config_is_reported_as_unverified(settings, valkey_with):
    settings.CELERY_BROKER_URL = valkey_with(**DURABLE, **{"rename-command": 'CONFIG ""'}) + "/0"
    assert _ids(check_broker()) == ["swrly.I020"]


def test_an_unreachable_broker_is_a_warning(settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    settings.CELERY_BROKER_SOCKET_TIMEOUT = 1.0
    assert _ids(check_broker()) == ["swrly.W020"]


def test_a_rabbitmq_broker_has_no_redis_checks(settings):
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{_closed_port()}//"
    assert check_broker() == []
    assert "swrly.W023" not in _ids(check_redis_roles())  # nothing to share with the key store


def test_a_key_store_on_the_brokers_server_is_warned_about_whatever_the_database(
    settings, valkey_with
):
    url = valkey_with(save="", appendonly="no")
    port = url.rsplit(":", 1)[1]
    settings.BYOK_REDIS_URL = f"redis://127.0.0.1:{port}/1"
    settings.CELERY_BROKER_URL = f"redis://localhost:{port}/2"  # the same server, named apart
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": f"{url}/3"}}
    found = check_redis_roles()
    assert _ids(found) == ["swrly.I021", "swrly.W023"]
    assert "opposite" in next(m for m in found if m.id == "swrly.W023").msg


def test_roles_on_servers_of_their_own_pass(settings, valkey_with):
    settings.BYOK_REDIS_URL = valkey_with(save="", appendonly="no") + "/0"
    settings.CELERY_BROKER_URL = valkey_with(**DURABLE) + "/0"
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": valkey_with() + "/0"}}
    assert check_redis_roles() == []
    assert check_broker() == []


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("redis://localhost/0", ("127.0.0.1", 6379)),
        ("rediss://user:secret@Redis.Example:6380/2", ("redis.example", 6380)),
        ("redis://[::1]:7000", ("127.0.0.1", 7000)),
        ("amqp://guest:guest@127.0.0.1:5672//", None),
        ("redis+sentinel://s1:26379/mymaster", None),
        ("redis://a:6379/0;redis://b:6379/0", None),
    ],
)
def test_urls_are_compared_by_server(url, server):
    assert redis_server(url) == server


def test_manage_py_check_reports_the_broker_roles(settings, valkey_with):
    url = valkey_with(save="", appendonly="no")
    settings.BYOK_REDIS_URL = f"{url}/0"
    settings.CELERY_BROKER_URL = f"{url}/1"
    out = io.StringIO()
    call_command("check", tags=["swrly_broker"], stdout=out, stderr=out)
    assert "swrly.W021" in out.getvalue()
    assert "swrly.W023" in out.getvalue()
