"""`make run`'s launcher: the first-run .env, and the whole stack started and stopped."""

import base64
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from swrly.dev.devstack import ensure_env_file, read_env_file

ROOT = Path(__file__).resolve().parents[2]


def test_first_run_writes_fresh_secrets_privately(tmp_path):
    env_file = tmp_path / ".env"
    added = ensure_env_file(env_file)
    assert set(added) == {
        "DEBUG",
        "SECRET_KEY",
        "BYOK_ENCRYPTION_KEY",
        "AUDIT_CHAIN_KEY",
        "AUDIT_SIGNING_KEY",
        "ALLOWED_HOSTS",
    }
    values = read_env_file(env_file)
    assert len(base64.urlsafe_b64decode(values["BYOK_ENCRYPTION_KEY"])) == 32
    assert len(base64.urlsafe_b64decode(values["AUDIT_CHAIN_KEY"])) == 32
    assert len(base64.urlsafe_b64decode(values["AUDIT_SIGNING_KEY"])) == 32
    assert values["AUDIT_CHAIN_KEY"] != values["AUDIT_SIGNING_KEY"]
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
        [sys.executable, "-m", "swrly.dev.devstack"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )


def _read_until(process, marker, timeout=120):
    """The output up to `marker`; the rest is drained in the background so that no process of
    the stack ever blocks writing to a full pipe."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return "".join(lines)
    raise AssertionError(f"{marker!r} not seen:\n{''.join(lines)}")


def _trigger_printed_curl(output, port):
    """Do what the printed curl does (same URL, token and body), then follow the run."""
    token = re.search(r"Bearer (swr_[A-Za-z0-9_-]+)", output).group(1)
    body = re.search(r"-d '(\{.*\})'", output).group(1)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/runs/", data=body.encode(), headers=headers
    )
    with urllib.request.urlopen(request) as response:  # noqa: S310 (loopback http)
        assert response.status == 202
        run_id = json.loads(response.read())["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/runs/{run_id}/", headers=headers
        )
        with urllib.request.urlopen(request) as response:  # noqa: S310 (loopback http)
            run = json.loads(response.read())
        if run["status"] not in ("queued", "running"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


def test_make_run_serves_the_login_page_and_ctrl_c_stops_everything(tmp_path):
    port = _free_port()
    process = _start_stack(tmp_path, port)
    try:
        output = _read_until(process, "-d '{")
        children = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert "valkey-server" in names
        assert "celery" in names
        assert "--queues=maintenance" in names  # the reaper and sweeper's own worker
        assert " beat " in names  # beat is its own process
        assert "runserver" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/") as response:
            assert response.status == 200
            assert b"Sign in" in response.read()
        assert "owner@acme.example" in output
        assert "one-time password" in output
        assert "swrly.dev.sandbox" in names

        # the printed curl triggers a run that the stack's worker completes
        run = _trigger_printed_curl(output, port)
        assert run["status"] == "succeeded", run
        assert [step["status"] for step in run["steps"]] == ["succeeded"] * 3
        assert all(step["provider_request_id"] for step in run["steps"])

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
        output = _read_until(process, "-d '{")
        assert "Tenant acme exists; nothing changed." in output
        assert "one-time password" not in output
        assert (tmp_path / ".env").read_text() == env_before
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_stack_runs_beat_alone_and_maintenance_on_its_own_worker(tmp_path):
    from django.conf import settings

    from swrly.dev import devstack

    run_worker, maintenance_worker, beat = devstack.celery_commands(schedule=tmp_path / "s")
    assert devstack.RUN_QUEUE == settings.CELERY_TASK_DEFAULT_QUEUE
    assert devstack.MAINTENANCE_QUEUE == settings.MAINTENANCE_QUEUE
    assert run_worker[run_worker.index("worker") :].count(f"--queues={devstack.RUN_QUEUE}") == 1
    assert f"--queues={devstack.MAINTENANCE_QUEUE}" in maintenance_worker
    assert "beat" in beat
    assert "worker" not in beat
    assert not any("--beat" in arg for arg in run_worker + maintenance_worker)
