"""The API contract, fuzzed: schemathesis against a live server with seeded data and a real token.

Run by .ci/run, once per database. It starts a production-like stack of its own (gunicorn, a
Celery worker, the sandbox provider, and by default a fresh SQLite database and an embedded
Valkey), creates a tenant and an owner token, and seeds the tenant through the API itself: two
more members, tokens (one revoked), workflows, and runs that succeeded, failed, were cancelled,
and one whose workflow was then deleted. An empty tenant hides response-schema bugs (a blank
`error_code`, a null `workflow`). Then schemathesis runs over every route of /api/v1/schema/,
with the seeded ids as the path parameters' examples: no 5xx, and every response (errors
included) must match the schema. Exit status: schemathesis'.

    .ci/contract.py                       # SQLite in a temporary directory, embedded Valkey
    .ci/contract.py --database-url postgres://postgres@127.0.0.1:5432/swrly_contract \\
        --redis-url redis://127.0.0.1:6379/3
                                          # the PostgreSQL database is dropped and created anew;
                                          # the Redis database is flushed before and after
"""

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_postgres_database(url: str) -> None:
    """Drop and create the database `url` names (through the server's `postgres` database)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name or not name.replace("_", "").isalnum() or name == "postgres":
        raise SystemExit(f"refusing to recreate the database {name!r}: name a dedicated one")
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


class Api:
    """A tiny JSON client for seeding through the real API."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def __call__(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        request = urllib.request.Request(
            f"{self.base}/api/v1/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        if status != expect:
            raise SystemExit(f"seeding: {method} {path} answered {status}, not {expect}: {text}")
        return json.loads(text) if text else None


def _workflow(api: Api, name: str, prompt: str) -> dict:
    steps = [{"name": "only", "provider": "sandbox", "model": "sandbox-1", "prompt": prompt}]
    return api("POST", "workflows/", {"name": name, "steps": steps}, expect=201)


def _run(api: Api, workflow: dict) -> dict:
    body = {
        "workflow": workflow["id"],
        "input": {"topic": "contracts"},
        "provider_keys": {"sandbox": "sk-sandbox-contract-" + secrets.token_hex(8)},
    }
    return api("POST", "runs/", body, expect=202)


def seed_before_worker(api: Api) -> dict[str, Any]:
    """Members, tokens, workflows and runs; one run cancelled while still queued."""
    seeded: dict[str, Any] = {}
    seeded["member"] = api(
        "POST", "members/", {"email": "dev@contract.example", "role": "developer"}, expect=201
    )
    api("POST", "members/", {"email": "audit@contract.example", "role": "auditor"}, expect=201)
    seeded["token"] = api("POST", "tokens/", {"name": "ci", "role": "developer"}, expect=201)
    revoked = api("POST", "tokens/", {"name": "old", "role": "auditor"}, expect=201)
    api("DELETE", f"tokens/{revoked['id']}/")
    # Deliveries to it fail (the name does not resolve): its state shows a last error.
    seeded["webhook"] = api(
        "POST", "audit-webhooks/", {"url": "https://siem.contract.invalid/ingest"}, expect=201
    )
    ok = _workflow(api, "contract_ok", "Summarise {{ input.topic }}.")
    failing = _workflow(api, "contract_fail", "Refused [sandbox:status=401] {{ input.topic }}")
    gone = _workflow(api, "contract_gone", "Soon deleted: {{ input.topic }}")
    seeded["workflow"] = ok
    seeded["runs"] = [_run(api, ok), _run(api, failing), _run(api, gone)]
    cancelled = _run(api, ok)
    api("POST", f"runs/{cancelled['id']}/cancel/", expect=202)
    seeded["cancelled"] = cancelled
    seeded["gone"] = gone
    return seeded


def seed_after_worker(api: Api, seeded: dict[str, Any]) -> dict[str, Any]:
    """Wait for the runs to end, check their outcomes, then delete one run's workflow."""
    deadline = time.monotonic() + 120
    ids = [run["id"] for run in seeded["runs"]]
    while True:
        runs = {run_id: api("GET", f"runs/{run_id}/") for run_id in ids}
        if all(run["status"] in TERMINAL for run in runs.values()):
            break
        if time.monotonic() > deadline:
            raise SystemExit(
                f"seeding: runs did not finish: {[r['status'] for r in runs.values()]}"
            )
        time.sleep(0.3)
    outcomes = [runs[run_id]["status"] for run_id in ids]
    if outcomes != ["succeeded", "failed", "succeeded"]:
        raise SystemExit(f"seeding: unexpected run outcomes {outcomes}")
    api("DELETE", f"workflows/{seeded['gone']['id']}/", expect=204)
    statuses = sorted(run["status"] for run in api("GET", "runs/")["results"])
    print(f"seeded runs: {statuses}, one of a deleted workflow", flush=True)
    return {
        "runs": seeded["runs"][2]["id"],  # its workflow is deleted
        "workflows": seeded["workflow"]["id"],
        "tokens": seeded["token"]["id"],
        "members": seeded["member"]["id"],
        "audit-webhooks": seeded["webhook"]["id"],
    }


def schema_with_examples(base: str, path_examples: dict[str, str], target: Path) -> None:
    """The served schema, with the seeded ids as examples of the `{id}` path parameters, so the
    examples phase reaches real objects (fuzzed ids only ever reach 404)."""
    request = urllib.request.Request(
        f"{base}/api/v1/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        schema = json.loads(response.read())
    for path, operations in schema["paths"].items():
        collection = path.removeprefix("/api/v1/").split("/")[0]
        example = path_examples.get(collection)
        if example is None:
            continue
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "path" and parameter.get("name") == "id":
                    parameter["example"] = example
    target.write_text(json.dumps(schema))


def start_server(env: dict[str, str], port: int) -> subprocess.Popen:
    """gunicorn on 127.0.0.1:`port`, once it answers."""
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
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/schema/", timeout=2)
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.terminate()
                raise SystemExit("the contract server did not start") from None
            time.sleep(0.3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--redis-url", help="default: an embedded Valkey")
    options = parser.parse_args()

    from swrly.dev.devstack import start_embedded_valkey
    from swrly.keys.keyring import generate_key

    workdir = Path(tempfile.mkdtemp(prefix="swrly-contract-"))
    database_url = options.database_url or f"sqlite:///{workdir / 'contract.sqlite3'}"
    if database_url.startswith(("postgres://", "postgresql://")):
        fresh_postgres_database(database_url)
    valkey = None
    redis_url = options.redis_url
    if redis_url is None:
        valkey = start_embedded_valkey()
        redis_url = f"{valkey.connection_url}/0"
    else:
        flush_redis(redis_url)
    port, sandbox_port = free_port(), free_port()
    env = {
        **os.environ,
        "SWRLY_ENV_FILE": os.devnull,
        "DEBUG": "False",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "BYOK_ENCRYPTION_KEY": generate_key(),
        "AUDIT_CHAIN_KEY": generate_key(),
        "AUDIT_SIGNING_KEY": generate_key(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PROVIDER_MAX_RETRIES": "0",
        "SECURE_SSL_REDIRECT": "False",
        "STATIC_MANIFEST": "False",
        "API_RATE_PER_IP": "",
        "API_RATE_PER_TOKEN": "",
        "LOG_LEVEL": "WARNING",
        # Invitations are sent nowhere: no mail server runs here.
        "EMAIL_URL": "dummymail://",
    }
    manage = [str(BIN / "python"), str(ROOT / "manage.py")]
    base = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen] = []
    print(f"== contract on {urlsplit(database_url).scheme} ==", flush=True)
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
        # Seeding runs real workflows on the sandbox provider, which plain http:// reaches only
        # with DEBUG on: a first server seeds with DEBUG, a second one (DEBUG off, no sandbox)
        # serves the contract run.
        seed_env = {
            **env,
            "DEBUG": "True",
            "PROVIDER_BASE_URLS": f"sandbox=http://127.0.0.1:{sandbox_port}",
        }
        sandbox = subprocess.Popen(
            [str(BIN / "python"), "-m", "swrly.dev.sandbox", "--port", str(sandbox_port)],
            env=seed_env,
            stdout=subprocess.DEVNULL,
        )
        processes.append(sandbox)
        server = start_server(seed_env, port)
        processes.append(server)
        api = Api(base, token)
        seeded = seed_before_worker(api)
        worker = subprocess.Popen(
            [
                str(BIN / "celery"),
                *("-A", "swrly", "worker", "--pool=threads", "--concurrency=2"),
                *("--loglevel=WARNING", "--without-heartbeat", "--without-mingle"),
            ],
            env=seed_env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,  # the banner
        )
        processes.append(worker)
        examples = seed_after_worker(api, seeded)
        for process in (worker, server, sandbox):
            process.terminate()
            process.wait(timeout=60)
        processes.append(start_server(env, port))
        schema_file = workdir / "schema.json"
        schema_with_examples(base, examples, schema_file)

        command = [
            str(BIN / "schemathesis"),
            "run",
            str(schema_file),
            "--url",
            base,  # the schema's paths start with /api/v1
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            CHECKS,
            "--max-examples",
            os.environ.get("CONTRACT_MAX_EXAMPLES", "25"),
            "--seed",
            os.environ.get("CONTRACT_SEED", "20261128"),
            "--generation-deterministic",
            "--max-time",
            os.environ.get("CONTRACT_MAX_TIME", "180"),
            "--request-timeout",
            "30",
            "--output-sanitize",
            "true",
        ]
        # The examples and coverage phases run on one thread: generating them on two raced in
        # Hypothesis' lambda-source parsing on CPython 3.11 ("AST constructor recursion depth
        # mismatch", a tool error, not the API's). Fuzzing runs on two, so requests overlap (as
        # they do in production: it found deadlocks that one client at a time never hits).
        wanted = os.environ.get("CONTRACT_PHASES", "examples,coverage,fuzzing").split(",")
        status = 0
        for phases, workers in ((["examples", "coverage"], "1"), (["fuzzing"], "2")):
            selected = [phase for phase in phases if phase in wanted]
            if selected:
                run = [*command, "--phases", ",".join(selected), "--workers", workers]
                status = subprocess.run(run, env=env, cwd=ROOT).returncode or status
        return status
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        if valkey is not None:
            valkey.stop()
        else:
            flush_redis(redis_url)


if __name__ == "__main__":
    sys.exit(main())
