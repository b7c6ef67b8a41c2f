"""Key stores of their own on a Sentinel group and on a 3-primary cluster (swrly.dev.valkey_ha),
whatever the session's key store is. `ha_store` runs a test once on each topology."""

import pytest

from swrly.dev.valkey_ha import start_cluster, start_sentinel_group


@pytest.fixture(scope="module")
def sentinel_group():
    group = start_sentinel_group()
    yield group
    group.stop()


@pytest.fixture(scope="module")
def cluster():
    started = start_cluster()
    yield started
    started.stop()


@pytest.fixture(params=["sentinel", "cluster"])
def ha_store(request, settings):
    """The topology (a valkey_ha object) the test's key store (BYOK_REDIS_URL) is on, empty."""
    topology = request.getfixturevalue(
        "sentinel_group" if request.param == "sentinel" else "cluster"
    )
    topology.flushall()
    settings.BYOK_REDIS_URL = topology.url
    yield topology
    topology.flushall()
