"""Test environment, loaded with `-p` before pytest-django reads the settings.

It gives the session fresh secrets, ignores any local .env, and starts one embedded Valkey
server for the session unless REDIS_URL is set. Under pytest-xdist the controller starts the
server and each worker uses its own Redis database number on it.

SWRLY_TEST_KEY_STORE=sentinel|cluster puts the key store (BYOK_REDIS_URL) on a highly available
topology of swrly.dev.valkey_ha instead: one Sentinel group for the session (each worker on its
own database number, like REDIS_URL), or one 3-primary cluster per process (a cluster has one
database). The other Redis roles (cache, throttling) stay on the single server.
"""

import os
import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from swrly.dev.devstack import start_embedded_valkey
from swrly.keys.keyring import generate_key

_valkey = None
_key_store: Any = None
KEY_STORE_TOPOLOGIES = ("", "single", "sentinel", "cluster")


def _worker_redis_url(url: str, worker: str) -> str:
    """The same server, database number 1 + the worker's index (gw0 → 1)."""
    index = int(worker.removeprefix("gw") or 0)
    parts = urlsplit(url)
    if parts.scheme in ("redis+sentinel", "rediss+sentinel"):
        master = parts.path.strip("/").split("/")[0]
        return urlunsplit(parts._replace(path=f"/{master}/{index + 1}"))
    if parts.scheme not in ("redis", "rediss", "valkey"):
        return url
    return urlunsplit(parts._replace(path=f"/{index + 1}"))


def _prepare_key_store(worker: str | None) -> None:
    """BYOK_REDIS_URL on the topology SWRLY_TEST_KEY_STORE names (unset: REDIS_URL's server)."""
    global _key_store
    topology = os.environ.get("SWRLY_TEST_KEY_STORE", "")
    if topology not in KEY_STORE_TOPOLOGIES:
        raise ValueError(f"SWRLY_TEST_KEY_STORE must be one of {KEY_STORE_TOPOLOGIES[1:]}")
    from swrly.dev import valkey_ha

    if topology == "cluster":  # every process its own: the tests flush the whole key store
        _key_store = valkey_ha.start_cluster()
        os.environ["BYOK_REDIS_URL"] = _key_store.url
    elif topology == "sentinel":
        if not worker:  # the xdist controller (the workers inherit its URL) or a lone process
            _key_store = valkey_ha.start_sentinel_group()
            os.environ["BYOK_REDIS_URL"] = _key_store.url
        else:
            os.environ["BYOK_REDIS_URL"] = _worker_redis_url(os.environ["BYOK_REDIS_URL"], worker)


def _prepare_environment() -> None:
    global _valkey
    os.environ["SWRLY_ENV_FILE"] = os.devnull
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("BYOK_ENCRYPTION_KEY", generate_key())
    os.environ.setdefault("AUDIT_CHAIN_KEY", generate_key())
    os.environ.setdefault("AUDIT_SIGNING_KEY", generate_key())
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "False")
    os.environ.setdefault("STATIC_MANIFEST", "False")
    os.environ.setdefault("AXES_FAILURE_LIMIT", "5")
    # Tests share one client address; the throttling tests set their own rates.
    os.environ.setdefault("API_RATE_PER_IP", "")
    os.environ.setdefault("API_RATE_PER_TOKEN", "")
    if not os.environ.get("REDIS_URL"):
        _valkey = start_embedded_valkey()
        os.environ["REDIS_URL"] = _valkey.connection_url + "/0"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        os.environ["REDIS_URL"] = _worker_redis_url(os.environ["REDIS_URL"], worker)
    _prepare_key_store(worker)


_prepare_environment()


def pytest_unconfigure(config: object) -> None:
    if _valkey is not None:
        _valkey.stop()
    if _key_store is not None:
        _key_store.stop()
