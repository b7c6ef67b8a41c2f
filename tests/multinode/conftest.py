"""The multi-node test runs only when asked for: `pytest -m multinode tests/multinode -s`.

`make test` (plain `pytest -n 2`) deselects it: it starts a dozen servers and takes minutes.
Where PostgreSQL, PgBouncer or RabbitMQ is missing it is skipped, except in CI (`CI=true`) or
with SWRLY_REQUIRE_MULTINODE=1 (.ci/run sets it): there it fails.
"""

from __future__ import annotations

import os

import pytest

MARKER = "multinode"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MARKER in (config.option.markexpr or ""):
        return  # asked for by its marker: `-m multinode`
    deselected = [item for item in items if item.get_closest_marker(MARKER)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker(MARKER)]


def required() -> bool:
    return os.environ.get("CI") == "true" or bool(os.environ.get("SWRLY_REQUIRE_MULTINODE"))
