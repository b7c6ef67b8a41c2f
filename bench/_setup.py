"""Shared set-up for the benchmarks: settings, secrets and a Redis server for one run.

A benchmark starts its own embedded Valkey (no persistence) unless REDIS_URL is set, and
generates its own secrets; it never reads .env.
"""

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_valkey = None


def configure() -> str:
    """Prepare the environment, start Redis if needed, set up Django; returns the Redis URL."""
    global _valkey
    import secrets

    from swrly.keys.keyring import generate_key

    os.environ["SWRLY_ENV_FILE"] = os.devnull
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("BYOK_ENCRYPTION_KEY", generate_key())
    os.environ.setdefault("AUDIT_CHAIN_KEY", generate_key())
    os.environ.setdefault("AUDIT_SIGNING_KEY", generate_key())
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "swrly.settings")
    if not os.environ.get("REDIS_URL"):
        from swrly.dev.devstack import start_embedded_valkey

        _valkey = start_embedded_valkey()
        os.environ["REDIS_URL"] = _valkey.connection_url + "/0"
    import django

    django.setup()
    return os.environ["REDIS_URL"]


def stop() -> None:
    if _valkey is not None:
        _valkey.stop()


def best_rate(run: Callable[[], int], rounds: int) -> tuple[float, float]:
    """(best, median) operations per second over `rounds` runs of `run` (which returns ops)."""
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        ops = run()
        rates.append(ops / (time.perf_counter() - started))
    return max(rates), statistics.median(rates)
