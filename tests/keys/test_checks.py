"""Start-up checks of the keyring and of the key-store Redis, against real servers."""

import socket

import pytest

from swrly.checks import check_key_store, check_keyring
from swrly.dev.devstack import start_embedded_valkey
from tests.keys.conftest import new_key


def _ids(messages):
    return sorted(m.id for m in messages)


@pytest.fixture
def valkey_with():
    servers = []

    def start(**config):
        server = start_embedded_valkey(config)
        servers.append(server)
        return f"{server.connection_url}/0"

    yield start
    for server in servers:
        server.stop()


def test_the_test_key_store_passes(settings):
    assert check_key_store() == []


def test_persistence_and_eviction_are_warned_about(settings, valkey_with):
    settings.BYOK_REDIS_URL = valkey_with(
        save="900 1", appendonly="yes", maxmemory="64mb", **{"maxmemory-policy": "allkeys-lru"}
    )
    found = check_key_store()
    assert _ids(found) == ["swrly.W011", "swrly.W012", "swrly.W013"]
    assert "allkeys-lru" in found[2].msg


def test_volatile_eviction_is_warned_about_too(settings, valkey_with):
    settings.BYOK_REDIS_URL = valkey_with(
        save="", maxmemory="64mb", **{"maxmemory-policy": "volatile-ttl"}
    )
    assert _ids(check_key_store()) == ["swrly.W013"]


def test_a_server_that_refuses_config_is_reported_as_unverified(settings, valkey_with):
    settings.BYOK_REDIS_URL = valkey_with(**{"rename-command": 'CONFIG ""'})
    found = check_key_store()
    assert _ids(found) == ["swrly.I010"]
    assert "could not verify" in found[0].msg


def test_an_unreachable_key_store_is_a_warning(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.BYOK_REDIS_URL = f"redis://127.0.0.1:{port}/0"
    assert _ids(check_key_store()) == ["swrly.W010"]


@pytest.mark.parametrize(
    ("current", "fallbacks", "named"),
    [
        ("not base64!", [], "BYOK_ENCRYPTION_KEY"),
        ("c2hvcnQ=", [], "BYOK_ENCRYPTION_KEY"),
        (None, ["tooshort"], "BYOK_ENCRYPTION_KEY_FALLBACKS"),
        (None, ["SAME"], "BYOK_ENCRYPTION_KEY_FALLBACKS"),
    ],
)
def test_a_bad_encryption_key_is_a_startup_error_naming_the_variable(
    settings, current, fallbacks, named
):
    good = new_key()
    settings.BYOK_ENCRYPTION_KEY = current or good
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [good if f == "SAME" else f for f in fallbacks]
    (error,) = check_keyring()
    assert error.id == "swrly.E002"
    assert named in error.msg
    assert good not in error.msg


def test_a_good_keyring_passes(settings):
    settings.BYOK_ENCRYPTION_KEY = new_key()
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [new_key(), new_key()]
    assert check_keyring() == []
