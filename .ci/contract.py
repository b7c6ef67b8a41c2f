"""The API contract, fuzzed: schemathesis against a live server with a real token.

Run by .ci/run. It starts a production-like stack of its own (gunicorn, a fresh SQLite database
in a temporary directory, an embedded Valkey), creates a tenant and an owner token, and runs
schemathesis over every route of /api/v1/schema/: no 5xx, and every response (errors included)
must match the schema. Exit status: schemathesis'.
"""

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = ROOT / ".venv" / "bin"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    from swrly.devstack import start_embedded_valkey
    from swrly.keys.keyring import generate_key

    valkey = start_embedded_valkey()
    workdir = Path(tempfile.mkdtemp(prefix="swrly-contract-"))
    port = free_port()
    env = {
        **os.environ,
        "SWRLY_ENV_FILE": os.devnull,
        "DEBUG": "False",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "BYOK_ENCRYPTION_KEY": generate_key(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{workdir / 'contract.sqlite3'}",
        "REDIS_URL": f"{valkey.connection_url}/0",
        "SECURE_SSL_REDIRECT": "False",
        "STATIC_MANIFEST": "False",
        "API_RATE_PER_IP": "",
        "API_RATE_PER_TOKEN": "",
        "LOG_LEVEL": "WARNING",
    }
    manage = [str(BIN / "python"), str(ROOT / "manage.py")]
    server = None
    try:
        subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True)
        subprocess.run(
            [*manage, "create-tenant", "contract", "--owner-email", "owner@contract.example"],
            env=env,
            check=True,
            capture_output=True,
        )
        token = subprocess.run(
            [*manage, "create-api-token", "contract", "--name", "schemathesis", "--role", "owner"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()[-1]
        server = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "swrly.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "2",
                "--threads",
                "4",
                "--log-level",
                "warning",
                # Fuzzed query strings exceed gunicorn's request-line guard (a 414 from the
                # server itself, outside the API): let them reach the API.
                "--limit-request-line",
                "0",
            ],
            env=env,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v1/schema/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the contract server did not start") from None
                time.sleep(0.3)
        command = [
            str(BIN / "schemathesis"),
            "run",
            f"{base}/api/v1/schema/",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            CHECKS,
            "--phases",
            os.environ.get("CONTRACT_PHASES", "examples,coverage,fuzzing"),
            "--max-examples",
            os.environ.get("CONTRACT_MAX_EXAMPLES", "25"),
            "--workers",
            "2",
            "--seed",
            os.environ.get("CONTRACT_SEED", "20261128"),
            "--generation-deterministic",
            "--max-time",
            os.environ.get("CONTRACT_MAX_TIME", "600"),
            "--request-timeout",
            "30",
            "--output-sanitize",
            "true",
        ]
        print("schemathesis", " ".join(command[2:3]), flush=True)
        return subprocess.run(command, env=env, cwd=ROOT).returncode
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        valkey.stop()


if __name__ == "__main__":
    sys.exit(main())
