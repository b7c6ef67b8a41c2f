"""Test environment, loaded with `-p` before pytest-django reads the settings.

It gives the session fresh secrets, ignores any local .env, and starts one embedded Valkey
server for the session unless REDIS_URL is set. Under pytest-xdist the controller starts the
server and each worker uses its own Redis database number on it.
"""

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

from swrly.dev.devstack import start_embedded_valkey
from swrly.keys.keyring import generate_key

_valkey = None


def _worker_redis_url(url: str, worker: str) -> str:
    """The same server, database number 1 + the worker's index (gw0 → 1)."""
    index = int(worker.removeprefix("gw") or 0)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "valkey"):
        return url
    return urlunsplit(parts._replace(path=f"/{index + 1}"))


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


_prepare_environment()


def pytest_unconfigure(config: object) -> None:
    if _valkey is not None:
        _valkey.stop()
