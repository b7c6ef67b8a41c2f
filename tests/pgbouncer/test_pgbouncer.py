"""PostgreSQL through a real PgBouncer in transaction mode (issue 14 §5).

The important database paths (tests/pgbouncer/through_pgbouncer.py) run in a pytest of their
own whose DATABASE_URL points at a PgBouncer started here, with DATABASE_POOL_MODE=transaction:
its test database is created and migrated through PgBouncer, and every statement of those tests
is pooled per transaction. PgBouncer's own statistics prove the traffic went through it.

Skipped only where the pgbouncer binary is absent and SWRLY_REQUIRE_PGBOUNCER is unset; .ci/run
installs Debian's package and sets it, so in CI a missing PgBouncer fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import psycopg.sql
import pytest

from tests.pgbouncer.server import PgBouncer, pgbouncer_missing, start_pgbouncer

ROOT = Path(__file__).resolve().parents[2]
PATHS = Path(__file__).with_name("through_pgbouncer.py")


def _postgres_up() -> bool:
    try:
        psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture(scope="module")
def pgbouncer():
    required = bool(os.environ.get("SWRLY_REQUIRE_PGBOUNCER"))  # .ci/run sets it
    missing = pgbouncer_missing()
    if missing and required:
        pytest.fail(missing)
    if not missing and not _postgres_up():
        missing = "PostgreSQL does not answer on 127.0.0.1:5432 (trust, user postgres)"
        if required and os.environ.get("CI") == "true":
            pytest.fail(missing)
    if missing:
        pytest.skip(missing)
    bouncer = start_pgbouncer()
    yield bouncer
    bouncer.stop()


def test_pgbouncer_pools_per_transaction(pgbouncer: PgBouncer):
    config = {row["key"]: row["value"] for row in pgbouncer.admin("SHOW CONFIG")}
    assert config["pool_mode"] == "transaction"


def test_a_held_cursor_is_lost_under_transaction_pooling(pgbouncer: PgBouncer):
    """Why `.iterator()` cannot be used: a WITH HOLD cursor stays on one server connection.

    Client A declares it outside a transaction (what Django does for `.iterator()` in
    autocommit) and its server connection goes back to the pool; client B's transaction takes
    that connection, so A's next fetch runs on another one, where the cursor does not exist.
    """
    url = pgbouncer.url("postgres")
    with (
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as a,
        psycopg.connect(url, prepare_threshold=None) as b,
    ):
        a.execute("DECLARE held CURSOR WITH HOLD FOR SELECT generate_series(1, 10)")
        b.execute("SELECT 1")  # B's transaction now holds the connection A just released
        with pytest.raises(psycopg.errors.InvalidCursorName):
            a.execute("FETCH 5 FROM held")
        b.rollback()


def test_the_important_paths_pass_through_pgbouncer(pgbouncer: PgBouncer):
    name = f"swrly_pgbouncer_{os.getpid()}"
    env = {
        key: value
        for key, value in os.environ.items()
        # The inner pytest gets its own embedded Valkey and no xdist worker identity.
        if key not in ("REDIS_URL", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT")
        and not key.startswith("PYTEST_")
    }
    env |= {
        "DATABASE_URL": pgbouncer.url(name),
        "DATABASE_POOL_MODE": "transaction",
        "SWRLY_PGBOUNCER_PORT": str(pgbouncer.port),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(PATHS),
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-q",
            # Kept at the end (dropping it through PgBouncer would find its pooled
            # connections): dropped below, directly on PostgreSQL.
            "--reuse-db",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = done.stdout[-6000:] + done.stderr[-3000:]
    stats = pgbouncer.stats(f"test_{name}")
    _drop(pgbouncer, f"test_{name}")
    assert done.returncode == 0, report + "\n--- pgbouncer.log ---\n" + pgbouncer.log()[-3000:]
    assert " passed" in done.stdout, report
    assert "skipped" not in done.stdout, report
    # The test database (pytest-django's test_<name>) was used through PgBouncer.
    assert int(stats.get("total_xact_count", 0)) > 100, stats


def _drop(pgbouncer: PgBouncer, database: str) -> None:
    """Close PgBouncer's connections to `database`, then drop it on PostgreSQL itself."""
    with contextlib.suppress(psycopg.Error):  # never pooled (the inner run failed early)
        pgbouncer.admin(f"KILL {database}")
    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(database)
            )
        )
