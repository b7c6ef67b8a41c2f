"""`make run`'s launcher: the first-run .env, and the whole stack started and stopped."""

import base64
import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
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
            "BYOK_REDIS_URL",
            "CELERY_BROKER_URL",
            "PROVIDER_BASE_URLS",
            "DEBUG",
            "SECRET_KEY",
            "BYOK_ENCRYPTION_KEY",
            "AUDIT_CHAIN_KEY",
            "AUDIT_SIGNING_KEY",
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


class Console:
    """The stack's console, read line by line in the background (so that no process of the
    stack ever blocks writing to a full pipe)."""

    def __init__(self, process):
        self.lines = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process):
        for line in process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append(None)  # end of output
            self._changed.notify_all()

    @property
    def text(self):
        return "".join(line for line in self.lines if line is not None)

    def wait_for(self, marker, timeout=300):
        """The output up to the end of the first `marker` (generous: a loaded machine)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                text = self.text
                if marker in text:
                    return text[: text.index(marker) + len(marker)]
                if self.lines and self.lines[-1] is None:
                    raise AssertionError(f"{marker!r} not seen before the end:\n{text}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{marker!r} not seen:\n{text}")
                self._changed.wait(remaining)


CLOSING = "for example: .venv/bin/python manage.py rotate-keys --dry-run"


def _second_shell(tmp_path, *args):
    """A manage.py command as from another shell in the checkout (`.venv/bin/python` there, or
    this interpreter): none of the stack's URLs in its environment (only SWRLY_ENV_FILE, since
    this stack's .env is not the checkout's)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"REDIS_URL", "BYOK_REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL"}
        and name not in {"PROVIDER_BASE_URLS", "SECRET_KEY", "BYOK_ENCRYPTION_KEY", "DEBUG"}
        and name not in {"AUDIT_CHAIN_KEY", "AUDIT_SIGNING_KEY", "ALLOWED_HOSTS"}
        and not name.startswith(("PYTEST", "DJANGO_SETTINGS"))
    }
    env["SWRLY_ENV_FILE"] = str(tmp_path / ".env")
    python = ROOT / ".venv" / "bin" / "python"
    return subprocess.run(
        [str(python) if python.exists() else sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout


def _runbook_commands():
    """The commands of docs/operations.md's make-run rotation runbook, as written there."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = text.split("<!-- make-run-rotation:start -->")[1].split("<!-- make-run-rotation:end")[0]
    return [line for line in block.splitlines() if line.startswith(".venv/bin/python manage.py")]


def _post_run(output, port):
    """What the printed curl does (same URL, token and body); returns (run id, headers)."""
    token = re.search(r"Bearer (swr_[A-Za-z0-9_-]+)", output).group(1)
    body = re.search(r"-d '(\{.*\})'", output).group(1)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/runs/", data=body.encode(), headers=headers
    )
    with urllib.request.urlopen(request) as response:  # noqa: S310 (loopback http)
        assert response.status == 202
        return json.loads(response.read())["id"], headers


def _trigger_printed_curl(output, port):
    """Do what the printed curl does, then follow the run to its end."""
    run_id, headers = _post_run(output, port)
    deadline = time.monotonic() + 120
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


def _status(url):
    try:
        with urllib.request.urlopen(url) as response:  # noqa: S310 (loopback http)
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _stop(process, signum=signal.SIGINT):
    os.killpg(process.pid, signum)  # what Ctrl-C does: the whole foreground process group
    return process.wait(timeout=120)


def test_make_run_ends_with_one_block_and_ctrl_c_stops_everything_quietly(tmp_path):
    port = _free_port()
    process = _start_stack(tmp_path, port)
    console = Console(process)
    try:
        output = console.wait_for(CLOSING + "\n" + "-" * 72 + "\n")
        children = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert "valkey-server" in names
        assert "--queues=maintenance" in names  # the reaper and sweeper's own worker
        assert " beat " in names  # beat is its own process
        assert "runserver" in names
        assert "swrly.dev.sandbox" in names

        # the console: quiet set-up, the workers' banners and readiness, then the one block
        assert "Traceback" not in output
        assert "Applying " not in output  # migrations: one line
        assert re.search(r"^Applied \d+ migrations \(", output, re.MULTILINE)
        assert "System check identified" not in output
        block = output[output.index("\n" + "-" * 72 + "\n") :]
        before = output[: len(output) - len(block)]
        for line in ("-------------- runs@", "-------------- maintenance@"):
            assert line in before  # the workers' banners come before it
        assert re.search(r"runs@\S+ ready\.", before)
        assert re.search(r"maintenance@\S+ ready\.", before)
        assert "Starting development server" in before
        expected = [
            f"Swrly is running: http://127.0.0.1:{port}/",
            "Sign in as owner@acme.example with this one-time password",
            "curl -s -X POST",
            f"reach this stack through {tmp_path / '.swrly' / 'runtime.env'}",
            CLOSING,
        ]
        positions = [block.index(text) for text in expected]
        assert positions == sorted(positions)
        password = block.split("(shown only now):\n", 1)[1].splitlines()[0].strip()
        assert len(password) >= 12
        assert block.rstrip().endswith("-" * 72)

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/") as response:
            assert response.status == 200
            assert b"Sign in" in response.read()

        # the printed curl triggers a run that the stack's worker completes
        run = _trigger_printed_curl(output, port)
        assert run["status"] == "succeeded", run
        assert [step["status"] for step in run["steps"]] == ["succeeded"] * 3
        assert all(step["provider_request_id"] for step in run["steps"])

        # another shell reaches the stack: a run held back by its tenant's limit keeps its
        # stored key in the stack's key store, and rotate-keys --dry-run counts it
        runtime_file = tmp_path / ".swrly" / "runtime.env"
        assert oct(runtime_file.stat().st_mode & 0o777) == oct(0o600)
        assert "max_running_runs: 0" in _second_shell(
            tmp_path, "tenant-limits", "acme", "--max-running-runs", "0"
        )
        _post_run(output, port)
        dry_run, generate, rotate, check = [
            shlex.split(command)[1:] for command in _runbook_commands()
        ]  # the runbook as docs/operations.md gives it
        assert dry_run == ["manage.py", "rotate-keys", "--dry-run"]
        counted = _second_shell(tmp_path, *dry_run[1:])
        valkey_url = re.search(r"Embedded Valkey on (redis://\S+) ", output).group(1)
        assert f"Key store: {valkey_url}/0 (the running `make run` stack's" in counted
        live = re.search(r"^  [0-9a-f]{16}\s+(\d+)  current$", counted, re.MULTILINE)
        assert live, counted
        assert int(live.group(1)) == 1, counted
        assert "BYOK_ENCRYPTION_KEY_FALLBACKS" in _second_shell(tmp_path, *generate[1:])
        assert "scanned 1, rewrapped 0, already current 1" in _second_shell(tmp_path, *rotate[1:])
        assert "it can be retired" in _second_shell(tmp_path, *check[1:])

        # each 4xx is logged once
        assert _status(f"http://127.0.0.1:{port}/no-such-page/") == 404
        assert _status(f"http://127.0.0.1:{port}/api/v1/runs/") == 401
        console.wait_for("GET /api/v1/runs/ 401")

        assert _stop(process) == 0
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], f"orphans left running: {alive}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    console.wait_for("Stopped.")
    output = console.text
    assert "Traceback" not in output
    assert "KeyboardInterrupt" not in output
    assert len([line for line in output.splitlines() if "/no-such-page/" in line]) == 1
    assert len([line for line in output.splitlines() if "/api/v1/runs/ 401" in line]) == 1
    assert output.rstrip().endswith("Stopped.")
    assert not runtime_file.exists()

    # a second run reuses the .env and the database: no new password, no migrations; a child
    # that dies is named and stops the stack
    env_before = (tmp_path / ".env").read_text()
    process = _start_stack(tmp_path, port)
    console = Console(process)
    try:
        console.wait_for(CLOSING)
        output = console.text
        assert "one-time password was shown at the first start" in output
        assert "with this one-time password" not in output
        assert "Applied " not in output
        assert (tmp_path / ".env").read_text() == env_before
        assert runtime_file.exists()
        (worker,) = [
            child
            for child in psutil.Process(process.pid).children(recursive=True)
            if "--hostname=runs@%h" in child.cmdline()
        ]
        worker.kill()
        assert process.wait(timeout=120) == 1
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    console.wait_for("Stopped.")
    output = console.text
    assert "The run worker was killed by signal 9 (SIGKILL); stopping." in output
    assert "Traceback" not in output
    assert not runtime_file.exists()


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
