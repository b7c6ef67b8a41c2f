"""The runtime file of `make run`: the URLs its processes use, for commands run in another shell.

While the stack is up, `.swrly/runtime.env` beside its `.env` (mode 0600, in a 0700 directory,
git-ignored) names the database, key store, broker, cache and sandbox it started its processes
with, and the launcher's PID. The launcher holds an exclusive `flock` on the file for as long as
it runs and deletes the file when it stops.

The settings read it (`apply_live_runtime`) only with DEBUG on, and only when the file is the
current user's, private, and held by a live launcher: a file left behind by a launcher that was
killed is ignored. Only names missing from the shell's environment are taken from it; it wins
over the `.env`, because it is what the running stack uses. Production (DEBUG off) neither
imports this module nor reads the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Collection, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# What the stack publishes: where the database, the key store, the broker, the cache (and rate
# limits) and the sandbox provider are.
RUNTIME_NAMES = (
    "DATABASE_URL",
    "BYOK_REDIS_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "PROVIDER_BASE_URLS",
)
PID_NAME = "SWRLY_DEVSTACK_PID"


def runtime_path(env_file: Path) -> Path:
    """`.swrly/runtime.env` in the directory of the stack's `.env`."""
    return env_file.parent / ".swrly" / "runtime.env"


@dataclass(frozen=True)
class LiveRuntime:
    """A runtime file held by a running launcher, and the names this process took from it."""

    path: Path
    pid: int
    values: dict[str, str]
    applied: tuple[str, ...]


class RuntimeFileBusy(Exception):
    """Another launcher holds the runtime file."""


class RuntimeFile:
    """The file, written and locked by the launcher; `close()` unlocks and deletes it."""

    def __init__(self, path: Path, values: Mapping[str, str]) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, exist_ok=True)
        # Opened without truncating: a live launcher's file is refused before it is touched.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeFileBusy(
                f"another `make run` (pid {_read_pid(path)}) is using {path}; stop it first"
            ) from None
        os.fchmod(fd, 0o600)
        self._handle: IO[str] | None = os.fdopen(fd, "w", encoding="utf-8")
        lines = [
            "# Written by `make run` while it runs; deleted when it stops. Never edit or commit.",
            f"{PID_NAME}={os.getpid()}",
            *(f"{name}={values[name]}" for name in RUNTIME_NAMES if values.get(name)),
        ]
        self._handle.truncate(0)
        self._handle.write("\n".join(lines) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._handle.close()  # releases the lock
        self._handle = None


def _parse(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _read_pid(path: Path) -> str:
    with contextlib.suppress(OSError):
        return _parse(path.read_text(encoding="utf-8")).get(PID_NAME, "?")
    return "?"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_live_runtime(path: Path) -> tuple[int, dict[str, str]] | None:
    """The launcher's PID and the published values, or None unless a live launcher holds a
    private file of this user's there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, encoding="utf-8") as handle:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            return None
        try:  # a lock we can take means no launcher holds the file: it was left behind
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            return None
        values = _parse(handle.read())
    try:
        pid = int(values.pop(PID_NAME, ""))
    except ValueError:
        return None
    if not _pid_alive(pid):
        return None
    return pid, {name: value for name, value in values.items() if name in RUNTIME_NAMES}


def apply_live_runtime(
    env_file: Path,
    *,
    shell_names: Collection[str],
    environ: MutableMapping[str, str] | None = None,
) -> LiveRuntime | None:
    """Put the running stack's URLs into `environ` (os.environ) for the names the shell did not
    set (`shell_names`: the environment before the .env was read); they replace the .env's."""
    target = os.environ if environ is None else environ
    path = runtime_path(env_file)
    live = read_live_runtime(path)
    if live is None:
        return None
    pid, values = live
    applied = tuple(name for name in RUNTIME_NAMES if name in values and name not in shell_names)
    for name in applied:
        target[name] = values[name]
    return LiveRuntime(path=path, pid=pid, values=values, applied=applied)
