"""`make run`'s runtime file: read only with DEBUG, only while its launcher holds it, and only
for what the shell did not set."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from swrly.dev.runtime import (
    RuntimeFile,
    RuntimeFileBusy,
    apply_live_runtime,
    read_live_runtime,
    runtime_path,
)
from swrly.keys.keyring import generate_key

ROOT = Path(__file__).resolve().parents[2]
URLS = {
    "DATABASE_URL": "sqlite:////tmp/runtime-file-test.sqlite3",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "BYOK_REDIS_URL": "redis://127.0.0.1:1/0",
    "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
    "PROVIDER_BASE_URLS": "sandbox=http://127.0.0.1:2",
}


@pytest.fixture
def env_file(tmp_path):
    return tmp_path / ".env"


def test_a_held_file_fills_only_what_the_shell_did_not_set(env_file):
    runtime = RuntimeFile(runtime_path(env_file), URLS)
    try:
        path = runtime_path(env_file)
        assert path == env_file.parent / ".swrly" / "runtime.env"
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
        environ = {"REDIS_URL": "redis://from-the-shell:6379/0", "DATABASE_URL": "from-dotenv"}
        live = apply_live_runtime(env_file, shell_names={"REDIS_URL"}, environ=environ)
        assert live is not None
        assert live.pid == os.getpid()
        assert environ["REDIS_URL"] == "redis://from-the-shell:6379/0"  # the shell wins
        assert environ["DATABASE_URL"] == URLS["DATABASE_URL"]  # over the .env's value
        assert environ["BYOK_REDIS_URL"] == URLS["BYOK_REDIS_URL"]
        assert "REDIS_URL" not in live.applied
        assert "BYOK_REDIS_URL" in live.applied
    finally:
        runtime.close()
    assert not runtime_path(env_file).exists()
    assert apply_live_runtime(env_file, shell_names=set(), environ={}) is None


def test_a_second_launcher_is_refused(env_file):
    runtime = RuntimeFile(runtime_path(env_file), URLS)
    try:
        with pytest.raises(RuntimeFileBusy, match=str(os.getpid())):
            RuntimeFile(runtime_path(env_file), {"REDIS_URL": "redis://127.0.0.1:3/0"})
        assert read_live_runtime(runtime_path(env_file))[1]["REDIS_URL"] == URLS["REDIS_URL"]
    finally:
        runtime.close()


def test_a_file_left_behind_is_ignored(env_file):
    # given: what a launcher killed with SIGKILL leaves (the file, its own live PID, no lock)
    path = runtime_path(env_file)
    path.parent.mkdir(mode=0o700)
    path.write_text(f"SWRLY_DEVSTACK_PID={os.getpid()}\nREDIS_URL=redis://127.0.0.1:1/0\n")
    path.chmod(0o600)
    # then
    assert read_live_runtime(path) is None


def test_a_file_others_may_read_is_ignored(env_file):
    runtime = RuntimeFile(runtime_path(env_file), URLS)
    try:
        runtime_path(env_file).chmod(0o644)
        assert read_live_runtime(runtime_path(env_file)) is None
    finally:
        runtime.close()


SHOW_SETTINGS = """
import json, sys
import django
django.setup()
from django.conf import settings
print(json.dumps({
    "redis": settings.REDIS_URL,
    "key_store": settings.BYOK_REDIS_URL,
    "database": settings.DATABASES["default"]["NAME"],
    "runtime_imported": "swrly.dev.runtime" in sys.modules,
}))
"""


@pytest.mark.parametrize("debug", [True, False])
def test_only_debug_settings_read_a_live_file(env_file, debug):
    # given: a live file (held by this process) beside an .env
    env_file.write_text(f"DEBUG={debug}\n")
    runtime = RuntimeFile(runtime_path(env_file), URLS)
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DEBUG", "DATABASE_URL", *URLS} and not name.startswith("PYTEST")
    }
    env.update(
        SWRLY_ENV_FILE=str(env_file),
        DJANGO_SETTINGS_MODULE="swrly.settings",
        SECRET_KEY=secrets.token_urlsafe(50),
        BYOK_ENCRYPTION_KEY=generate_key(),
        AUDIT_CHAIN_KEY=generate_key(),
        AUDIT_SIGNING_KEY=generate_key(),
        ALLOWED_HOSTS="swrly.example",
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", SHOW_SETTINGS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        runtime.close()
    seen = json.loads(result.stdout.splitlines()[-1])
    if debug:
        assert seen["redis"] == URLS["REDIS_URL"]
        assert seen["key_store"] == URLS["BYOK_REDIS_URL"]
        assert seen["database"] == "/tmp/runtime-file-test.sqlite3"  # noqa: S108
    else:  # production: the file is not read, its module not even imported
        assert seen["redis"] == "redis://127.0.0.1:6379/0"
        assert seen["database"] != "/tmp/runtime-file-test.sqlite3"  # noqa: S108
        assert seen["runtime_imported"] is False
