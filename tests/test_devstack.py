"""`make run`'s launcher: the first-run .env, and the whole stack started and stopped."""

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from swrly.devstack import ensure_env_file, read_env_file

ROOT = Path(__file__).resolve().parent.parent


def test_first_run_writes_fresh_secrets_privately(tmp_path):
    env_file = tmp_path / ".env"
    added = ensure_env_file(env_file)
    assert set(added) == {"DEBUG", "SECRET_KEY", "BYOK_ENCRYPTION_KEY", "ALLOWED_HOSTS"}
    values = read_env_file(env_file)
    assert len(base64.urlsafe_b64decode(values["BYOK_ENCRYPTION_KEY"])) == 32
    assert len(values["SECRET_KEY"]) >= 50
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # a second machine gets different secrets: nothing is hard-coded
    other = tmp_path / "other.env"
    ensure_env_file(other)
    assert read_env_file(other)["SECRET_KEY"] != values["SECRET_KEY"]
    assert read_env_file(other)["BYOK_ENCRYPTION_KEY"] != values["BYOK_ENCRYPTION_KEY"]


def test_second_run_keeps_the_env_and_only_fills_gaps(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("SECRET_KEY=keep-me\nREDIS_URL=redis://127.0.0.1:1/0\n")
    added = ensure_env_file(env_file)
    assert "SECRET_KEY" not in added
    values = read_env_file(env_file)
    assert values["SECRET_KEY"] == "keep-me"
    assert values["REDIS_URL"] == "redis://127.0.0.1:1/0"
    assert ensure_env_file(env_file) == []
    assert read_env_file(env_file) == values


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_stack(tmp_path, port):
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "REDIS_URL",
            "SECRET_KEY",
            "BYOK_ENCRYPTION_KEY",
            "ALLOWED_HOSTS",
            "DATABASE_URL",
            "STATIC_MANIFEST",
            "SECURE_SSL_REDIRECT",
        }
        and not key.startswith(("PYTEST", "DJANGO_SETTINGS"))
    }
    env.update(
        SWRLY_ENV_FILE=str(tmp_path / ".env"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "swrly.devstack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )


def _read_until(process, marker, timeout=120):
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"{marker!r} not seen:\n{''.join(lines)}")


def test_make_run_serves_the_login_page_and_ctrl_c_stops_everything(tmp_path):
    port = _free_port()
    process = _start_stack(tmp_path, port)
    try:
        output = _read_until(process, "Swrly is running")
        children = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert "valkey-server" in names
        assert "celery" in names
        assert "runserver" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/") as response:
            assert response.status == 200
            assert b"Sign in" in response.read()
        assert "owner@acme.example" in output
        assert "one-time password" in output

        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does
        process.wait(timeout=60)
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"orphans left running: {alive}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    # a second run reuses the .env and the database: no new owner password
    env_before = (tmp_path / ".env").read_text()
    process = _start_stack(tmp_path, port)
    try:
        output = _read_until(process, "Swrly is running")
        assert "Tenant acme exists; nothing changed." in output
        assert "one-time password" not in output
        assert (tmp_path / ".env").read_text() == env_before
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
