import pytest

from swrly.keys.keyring import generate_key
from swrly.keys.store import get_client


def new_key() -> str:
    return generate_key()


@pytest.fixture
def key_store():
    """The key-store Redis database of this test worker, empty before and after the test."""
    client = get_client()
    client.flushdb()
    yield client
    client.flushdb()
