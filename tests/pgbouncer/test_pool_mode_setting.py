"""DATABASE_POOL_MODE: what it changes in the database settings (no PgBouncer needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PG = "postgres://swrly@pgbouncer.example:6432/swrly"
_PRINT = (
    "import json; from django.conf import settings; d = settings.DATABASES['default']; "
    "print(json.dumps([d.get('DISABLE_SERVER_SIDE_CURSORS', False), "
    "d.get('OPTIONS', {}).get('prepare_threshold', 'unset')]))"
)


def _settings(**env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_POOL_MODE"}
    environ |= {"DJANGO_SETTINGS_MODULE": "swrly.settings", "SWRLY_ENV_FILE": os.devnull, **env}
    return subprocess.run(
        [sys.executable, "-c", _PRINT],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": PG, "DATABASE_POOL_MODE": "transaction"}, [True, None]),
        ({"DATABASE_URL": PG, "DATABASE_POOL_MODE": "session"}, [False, "unset"]),
        ({"DATABASE_URL": PG}, [False, "unset"]),
        (
            {"DATABASE_URL": "sqlite:///x.sqlite3", "DATABASE_POOL_MODE": "transaction"},
            [False, "unset"],
        ),
    ],
)
def test_transaction_pooling_turns_off_held_cursors_and_prepared_statements(env, expected):
    done = _settings(**env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected


def test_an_unknown_pool_mode_refuses_to_start():
    done = _settings(DATABASE_URL=PG, DATABASE_POOL_MODE="statement")
    assert done.returncode != 0
    assert "DATABASE_POOL_MODE must be 'session' or 'transaction'" in done.stderr
