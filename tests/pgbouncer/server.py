"""A real PgBouncer in front of the test PostgreSQL (127.0.0.1:5432, trust, user postgres).

Started by the tests, never shared: its configuration, log and pid file live in a temporary
directory, it listens on a free loopback port and pools in transaction mode, the mode the
settings' `DATABASE_POOL_MODE=transaction` is for. Its admin console (`SHOW STATS`) lets a test
prove that its statements did go through it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
UPSTREAM_HOST = "127.0.0.1"
UPSTREAM_PORT = 5432

_CONFIG = """\
[databases]
* = host={host} port={upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


def pgbouncer_missing() -> str:
    """Why no PgBouncer can be started here, or "" when one can."""
    if not Path(PGBOUNCER).exists():
        return f"{PGBOUNCER} is missing: `apt-get install pgbouncer` (Debian's package)"
    return ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PgBouncer:
    """One running pgbouncer process; `url(name)` is a DATABASE_URL through it."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, command: str) -> list[dict[str, object]]:
        """Rows of an admin console command (`SHOW STATS`, `SHOW CONFIG`, …) as dicts."""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="pgbouncer", autocommit=True
        ) as conn:
            # The console speaks the simple query protocol only.
            cursor = conn.execute(command, prepare=False)
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def stats(self, database: str) -> dict[str, object]:
        """SHOW STATS's row for `database` (transactions and queries it pooled)."""
        for row in self.admin("SHOW STATS"):
            if row["database"] == database:
                return row
        return {}

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_pgbouncer(*, pool_size: int = 2) -> PgBouncer:
    """Start pgbouncer in transaction mode on a free port; wait until it answers.

    A small pool (`pool_size` server connections per database and user) makes different
    transactions of one client land on different server connections, so that session state
    (a held cursor, a prepared statement) left behind by one transaction shows up as broken.
    """
    directory = Path(tempfile.mkdtemp(prefix="swrly-pgbouncer-"))
    port = _free_port()
    (directory / "userlist.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(
        _CONFIG.format(
            host=UPSTREAM_HOST,
            upstream_port=UPSTREAM_PORT,
            port=port,
            directory=directory,
            pool_size=pool_size,
        )
    )
    command = [PGBOUNCER, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # pgbouncer refuses to run as root: drop to the postgres user (the directory is its).
        shutil.chown(directory, user="postgres")
        for path in directory.iterdir():
            shutil.chown(path, user="postgres")
        command[1:1] = ["-u", "postgres"]
    # Its console output goes to a file, never a pipe: pgbouncer logs every connection to
    # stderr too, and under load a pipe nobody reads fills up and stops pgbouncer mid-write
    # (seen in tests/multinode/: every client of the database hung until query_wait_timeout).
    with (directory / "stderr.log").open("wb") as console:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=console)
    bouncer = PgBouncer(port=port, directory=directory, process=process)
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            stderr = (directory / "stderr.log").read_text(errors="replace")
            log = bouncer.log()
            bouncer.stop()
            raise RuntimeError(f"pgbouncer exited ({process.returncode}): {stderr}{log}")
        try:
            bouncer.admin("SHOW VERSION")
            return bouncer
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                bouncer.stop()
                raise
            time.sleep(0.1)
