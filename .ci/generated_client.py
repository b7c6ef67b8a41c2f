"""The documented API flow, run by a client generated from the schema (no hand-written HTTP).

Run by .ci/run. It makes a throwaway virtualenv (never a project dependency) with
openapi-python-client, starts a stack of its own (an embedded Valkey, a fresh SQLite database,
the sandbox provider, gunicorn and a Celery worker), creates a tenant with a developer and an
auditor API token, generates a Python client from the served `/api/v1/schema.json`, and runs the
flow of docs/api.md with that client alone, under the throwaway interpreter:

- as developer: create workflows, trigger a run with an Idempotency-Key (and replay it), poll it
  to the end, read its steps and its key timeline, list runs; a run that fails, and a run whose
  workflow is then deleted (its `workflow` becomes null);
- as auditor: read the same runs and workflows without prompts, input or outputs, list the audit
  events page by page, export them, verify the chain; writes answer 403 (the error model).

Every answer must parse into the generated models: a field the schema declares required but a
response lacks, a null where the schema says non-null, or a value outside an enum fails the run;
so does a field the schema does not declare (a model's `additional_properties`).

    .ci/generated_client.py                  # the whole check, at most GENERATED_CLIENT_MAX_TIME
                                             # seconds (600 by default)
    .ci/generated_client.py --keep DIR       # also leave the generated client in DIR

The throwaway virtualenv is cached under $XDG_CACHE_HOME (or ~/.cache)/swrly-ci/, one per
generator version, and made anew when missing or broken. Exit status 0 when the flow passed.
"""

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
GENERATOR = "openapi-python-client==0.29.1"
# What the generated client imports besides the generator's own dependencies (attrs, httpx).
CLIENT_RUNTIME = ["python-dateutil==4.0.0"]
PACKAGE = "swrly_client"
SANDBOX_KEY = "sk-sandbox-generated-client-0001"
GENERATOR_CONFIG = """\
post_hooks: []
# Streamed exports: the generated functions return their bytes.
content_type_overrides:
  application/jsonl: application/octet-stream
  application/zip: application/octet-stream
"""


# --- Orchestration (the project's interpreter) -------------------------------------------------


def throwaway_venv(deadline: float) -> Path:
    """A virtualenv with the generator and the client's runtime; its python."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "swrly-ci"
    venv = cache / GENERATOR.replace("==", "-")
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join([GENERATOR, *CLIENT_RUNTIME])
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        check = [str(python), "-c", "import openapi_python_client, dateutil, attrs, httpx"]
        if subprocess.run(check, capture_output=True).returncode == 0:
            return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    install = subprocess.run(
        [*pip, *wanted.split()],
        capture_output=True,
        text=True,
        timeout=max(60, deadline - time.monotonic()),
    )
    if install.returncode != 0:
        print(install.stdout, install.stderr, sep="", file=sys.stderr)
        raise SystemExit(f"could not install {wanted} in {venv}")
    stamp.write_text(wanted)
    return python


def generate(python: Path, schema_url: str, workdir: Path, deadline: float) -> Path:
    """The client generated from the served schema, in `workdir`; the directory to import from."""
    config = workdir / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    output = workdir / "client"
    command = [
        str(python.parent / "openapi-python-client"),
        "generate",
        "--url",
        schema_url,
        "--meta",
        "none",
        "--output-path",
        str(output / PACKAGE),
        "--config",
        str(config),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=max(30, deadline - time.monotonic())
    )
    print(result.stdout, result.stderr, sep="", end="", flush=True)
    # The generator exits 0 with warnings for the parts it skipped: any warning is a failure
    # here, since every operation of the schema must be usable from the generated client.
    if result.returncode != 0 or "Warning" in result.stdout + result.stderr:
        raise SystemExit("openapi-python-client could not use the schema (see above)")
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="also copy the generated client there")
    options = parser.parse_args()
    # `timeout` (.ci/run) sends SIGTERM: stop the stack on the way out, as on any other exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    deadline = time.monotonic() + float(os.environ.get("GENERATED_CLIENT_MAX_TIME", "600"))

    sys.path.insert(0, str(ROOT))
    from contract import free_port, start_server  # .ci/contract.py: this script's directory

    from swrly.dev.devstack import start_embedded_valkey
    from swrly.keys.keyring import generate_key

    python = throwaway_venv(deadline)
    workdir = Path(tempfile.mkdtemp(prefix="swrly-generated-client-"))
    valkey = start_embedded_valkey()
    port, sandbox_port = free_port(), free_port()
    env = {
        **os.environ,
        "SWRLY_ENV_FILE": os.devnull,
        # The sandbox provider is plain http:// on loopback, which only DEBUG allows.
        "DEBUG": "True",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "BYOK_ENCRYPTION_KEY": generate_key(),
        "AUDIT_CHAIN_KEY": generate_key(),
        "AUDIT_SIGNING_KEY": generate_key(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "REDIS_URL": f"{valkey.connection_url}/0",
        "PROVIDER_BASE_URLS": f"sandbox=http://127.0.0.1:{sandbox_port}",
        "PROVIDER_MAX_RETRIES": "0",
        "SECURE_SSL_REDIRECT": "False",
        "STATIC_MANIFEST": "False",
        "LOG_LEVEL": "ERROR",  # not the 403s the flow asks for
    }
    manage = [str(BIN / "python"), str(ROOT / "manage.py")]
    base = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen] = []
    try:
        subprocess.run([*manage, "migrate", "-v", "0", "--skip-checks"], env=env, check=True)
        subprocess.run(
            [*manage, "create-tenant", "generated", "--owner-email", "owner@generated.example"],
            env=env,
            check=True,
            capture_output=True,
        )
        tokens = {}
        for role in ("developer", "auditor"):
            tokens[role] = subprocess.run(
                [*manage, "create-api-token", "generated", "--name", role, "--role", role],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()[-1]
        processes.append(
            subprocess.Popen(
                [str(BIN / "python"), "-m", "swrly.dev.sandbox", "--port", str(sandbox_port)],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        processes.append(start_server(env, port))
        processes.append(
            subprocess.Popen(
                [
                    str(BIN / "celery"),
                    *("-A", "swrly", "worker", "--pool=threads", "--concurrency=2"),
                    *("--loglevel=WARNING", "--without-heartbeat", "--without-mingle"),
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,  # the banner
            )
        )
        client_dir = generate(python, f"{base}/api/v1/schema.json", workdir, deadline)
        if options.keep:
            shutil.copytree(client_dir, options.keep, dirs_exist_ok=True)
        print("== the documented flow, with the generated client ==", flush=True)
        flow_env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(client_dir),
            "SWRLY_URL": base,
            "SWRLY_DEVELOPER_TOKEN": tokens["developer"],
            "SWRLY_AUDITOR_TOKEN": tokens["auditor"],
        }
        return subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--flow"],
            env=flow_env,
            timeout=max(30, deadline - time.monotonic()),
        ).returncode
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        valkey.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- The flow (the throwaway interpreter: the generated client, and nothing of the project) ---


def flow() -> int:
    import uuid
    from urllib.parse import parse_qs, urlsplit

    import httpx
    from swrly_client import AuthenticatedClient
    from swrly_client.api.audit_events import (
        audit_events_export_retrieve,
        audit_events_list,
        audit_events_verify_retrieve,
    )
    from swrly_client.api.me import me_retrieve
    from swrly_client.api.runs import (
        runs_create,
        runs_list,
        runs_retrieve,
        runs_timeline_retrieve,
    )
    from swrly_client.api.workflows import (
        workflows_create,
        workflows_destroy,
        workflows_retrieve,
    )
    from swrly_client.models import (
        ChainStatus,
        Error,
        PaginatedAuditEventList,
        PaginatedRunListList,
        ProviderEnum,
        RoleEnum,
        Run,
        RunCreateRequest,
        RunCreateRequestInput,
        RunCreateRequestProviderKeys,
        RunErrorCodeEnum,
        RunsListStatus,
        RunStatusEnum,
        RunTimeline,
        StepRequest,
        StepStatusEnum,
        Workflow,
        WorkflowRequest,
    )
    from swrly_client.types import UNSET, Unset

    base = os.environ["SWRLY_URL"]
    timeout = httpx.Timeout(30.0)
    developer = AuthenticatedClient(
        base_url=base,
        token=os.environ["SWRLY_DEVELOPER_TOKEN"],
        raise_on_unexpected_status=True,
        timeout=timeout,
    )
    auditor = AuthenticatedClient(
        base_url=base,
        token=os.environ["SWRLY_AUDITOR_TOKEN"],
        raise_on_unexpected_status=True,
        timeout=timeout,
    )
    checked: list[str] = []

    def expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
        """`value`, which must be a `kind` (a parsed model, not an Error or None)."""
        if not isinstance(value, kind):
            raise AssertionError(f"{what}: {value!r}")
        return value

    def check(condition: bool, what: str) -> None:
        if not condition:
            raise AssertionError(what)
        checked.append(what)

    def declared(model: Any, what: str) -> None:
        """Every field the server sent is one the schema declares, recursively. A model with no
        declared field is a free-form map (a run's input, its key fingerprints by provider):
        its members are the data, and only model values among them are looked into."""
        fields = [a.name for a in type(model).__attrs_attrs__ if a.name != "additional_properties"]
        values = [getattr(model, name) for name in fields]
        if fields and model.additional_properties:
            extra = sorted(model.additional_properties)
            raise AssertionError(f"{what}: fields the schema does not declare: {extra}")
        if not fields:
            values = list(model.additional_properties.values())
        for value in values:
            for item in value if isinstance(value, list) else [value]:
                if hasattr(type(item), "__attrs_attrs__"):
                    declared(item, f"{what}.{type(item).__name__}")

    def step(name: str, prompt: str, **extra: Any) -> StepRequest:
        return StepRequest(
            name=name, provider=ProviderEnum.SANDBOX, model="sandbox-1", prompt=prompt, **extra
        )

    def create_workflow(name: str, steps: list[StepRequest]) -> Workflow:
        response = workflows_create.sync_detailed(
            client=developer, body=WorkflowRequest(name=name, steps=steps)
        )
        check(response.status_code == 201, f"workflow {name} created: 201")
        workflow = expect(response.parsed, Workflow, f"workflow {name}")
        declared(workflow, "Workflow")
        return workflow

    def trigger(workflow: Workflow, idempotency_key: str | None = None) -> Any:
        body = RunCreateRequest(
            workflow=workflow.id,
            input_=RunCreateRequestInput.from_dict({"topic": "BYOK"}),
            provider_keys=RunCreateRequestProviderKeys.from_dict({"sandbox": SANDBOX_KEY}),
        )
        if idempotency_key is None:
            return runs_create.sync_detailed(client=developer, body=body)
        return runs_create.sync_detailed(
            client=developer, body=body, idempotency_key=idempotency_key
        )

    def finished(run: Run) -> Run:
        deadline = time.monotonic() + 120
        while run.status in (RunStatusEnum.QUEUED, RunStatusEnum.RUNNING):
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run.id} still {run.status} after 120 s")
            time.sleep(0.3)
            run = expect(runs_retrieve.sync(client=developer, id=run.id), Run, "polling")
        declared(run, "Run")
        return run

    # -- as developer ---------------------------------------------------------------------
    me = me_retrieve.sync(client=developer)
    check(me is not None and me.role == RoleEnum.DEVELOPER, "the developer token is a developer")

    workflow = create_workflow(
        "report",
        [
            step("outline", "Outline a report about {{ input.topic }}.", max_tokens=200),
            step(
                "draft",
                "Draft it from {{ steps.outline.output }}",
                system="You write short reports.",
                temperature=0.2,
            ),
        ],
    )
    check(workflow.providers == ["sandbox"], "the workflow's providers are derived")

    key = str(uuid.uuid4())
    first = trigger(workflow, key)
    check(first.status_code == 202, "a run triggered with an Idempotency-Key: 202")
    expect(first.parsed, Run, "the new run")
    check(first.parsed.error_code == RunErrorCodeEnum.VALUE_0 == "", "a new run's error_code is ''")
    again = trigger(workflow, key)
    check(
        again.status_code == 202
        and isinstance(again.parsed, Run)
        and again.parsed.id == first.parsed.id
        and again.headers.get("Idempotent-Replayed") == "true",
        "the same Idempotency-Key answers the same run, replayed",
    )

    run = finished(first.parsed)
    check(run.status == RunStatusEnum.SUCCEEDED, f"the run succeeded ({run.error_message})")
    check(run.error_code == "" and run.error_message == "", "a run that succeeded has no error")
    check(run.workflow == workflow.id and run.workflow_name == "report", "the run's workflow")
    check(
        not isinstance(run.input_, Unset) and run.input_.to_dict() == {"topic": "BYOK"},
        "the developer reads the run's input",
    )
    fingerprints = run.key_fingerprints.to_dict()
    check(
        list(fingerprints) == ["sandbox"]
        and fingerprints["sandbox"]["fingerprint"].startswith("v2:")
        and SANDBOX_KEY not in str(fingerprints),
        "the run shows its key's fingerprint, never the key",
    )
    check([s.name for s in run.steps] == ["outline", "draft"], "the run's steps, in order")
    for step_run in run.steps:
        check(step_run.status == StepStatusEnum.SUCCEEDED, f"step {step_run.name} succeeded")
        check(bool(step_run.provider_request_id), f"step {step_run.name} has a request id")
        check(
            isinstance(step_run.output_text, str) and bool(step_run.output_text),
            f"step {step_run.name} has its output for the developer",
        )
        check(
            isinstance(step_run.input_tokens, int) and isinstance(step_run.output_tokens, int),
            f"step {step_run.name} has its usage tokens",
        )

    timeline = expect(
        runs_timeline_retrieve.sync(client=developer, id=run.id), RunTimeline, "the timeline"
    )
    declared(timeline, "RunTimeline")
    kinds = [entry.kind for entry in timeline.keys[0].entries] if timeline.keys else []
    check(
        len(timeline.keys) == 1
        and timeline.keys[0].provider == "sandbox"
        and kinds[:2] == ["deposited", "consumed"],
        f"the key timeline: deposited, then consumed ({kinds})",
    )

    listed = expect(
        runs_list.sync(client=developer, status=RunsListStatus.SUCCEEDED, page_size=10),
        PaginatedRunListList,
        "the runs list",
    )
    check(run.id in [r.id for r in listed.results], "the run is listed among succeeded runs")
    for listed_run in listed.results:
        declared(listed_run, "RunList")

    refusing = create_workflow("refused", [step("only", "[sandbox:status=401] {{ input.topic }}")])
    failed = finished(expect(trigger(refusing).parsed, Run, "a run of 'refused'"))
    check(
        failed.status == RunStatusEnum.FAILED
        and failed.error_code == RunErrorCodeEnum.PROVIDER_AUTH_FAILED,
        f"a refused key fails the run provider_auth_failed ({failed.error_code})",
    )

    doomed = create_workflow("doomed", [step("only", "Soon gone: {{ input.topic }}")])
    orphan = finished(expect(trigger(doomed).parsed, Run, "a run of 'doomed'"))
    deleted = workflows_destroy.sync_detailed(client=developer, id=doomed.id)
    check(deleted.status_code == 204, "the workflow deleted: 204")
    orphan = expect(runs_retrieve.sync(client=developer, id=orphan.id), Run, "the orphan run")
    check(
        orphan.workflow is None and orphan.workflow_name == "doomed",
        "a run of a deleted workflow: workflow null, its name kept",
    )

    refused = audit_events_list.sync_detailed(client=developer)
    check(
        refused.status_code == 403
        and isinstance(refused.parsed, Error)
        and refused.parsed.error.code == "permission_denied",
        "developers may not read the audit log: 403, the error model",
    )

    # -- as auditor -----------------------------------------------------------------------
    me = me_retrieve.sync(client=auditor)
    check(me is not None and me.role == RoleEnum.AUDITOR, "the auditor token is an auditor")
    seen = expect(runs_retrieve.sync(client=auditor, id=run.id), Run, "the auditor's run")
    declared(seen, "Run (auditor)")
    check(isinstance(seen.input_, Unset), "auditors get no run input")
    check(
        all(isinstance(s.output_text, Unset) for s in seen.steps)
        and [s.provider_request_id for s in seen.steps]
        == [s.provider_request_id for s in run.steps],
        "auditors get steps without outputs, with request ids",
    )
    seen_workflow = expect(
        workflows_retrieve.sync(client=auditor, id=workflow.id), Workflow, "the auditor's workflow"
    )
    check(
        all(
            isinstance(s.prompt, Unset) and isinstance(s.system, Unset) for s in seen_workflow.steps
        )
        and [s.name for s in seen_workflow.steps] == ["outline", "draft"],
        "auditors get workflow steps without prompts",
    )
    denied = runs_create.sync_detailed(
        client=auditor,
        body=RunCreateRequest(
            workflow=workflow.id,
            provider_keys=RunCreateRequestProviderKeys.from_dict({"sandbox": SANDBOX_KEY}),
        ),
    )
    check(
        denied.status_code == 403
        and isinstance(denied.parsed, Error)
        and denied.parsed.error.code == "permission_denied",
        "auditors may not trigger runs: 403, the error model",
    )

    actions: list[str] = []
    cursor: str | Unset = UNSET
    pages = 0
    while True:
        page = expect(
            audit_events_list.sync(client=auditor, page_size=20, cursor=cursor),
            PaginatedAuditEventList,
            "a page of audit events",
        )
        pages += 1
        for event in page.results:
            declared(event, "AuditEvent")
        actions += [event.action for event in page.results]
        if not page.next_:
            break
        cursor = parse_qs(urlsplit(page.next_).query)["cursor"][0]
        if pages > 50:
            raise AssertionError("more than 50 pages of audit events")
    wanted = {
        "workflow.created",
        "run.created",
        "key.deposited",
        "key.consumed",
        "run.succeeded",
        "run.failed",
        "workflow.deleted",
        "access.denied",
    }
    check(
        pages > 1 and wanted <= set(actions),
        f"the audit log, {pages} pages: {sorted(wanted - set(actions)) or 'every action expected'}",
    )
    export = expect(audit_events_export_retrieve.sync(client=auditor), bytes, "the export")
    lines = export.decode().splitlines()
    check(len(lines) >= len(actions), f"the export holds the events ({len(lines)} lines)")
    status = expect(
        audit_events_verify_retrieve.sync(client=auditor), ChainStatus, "the chain status"
    )
    declared(status, "ChainStatus")
    check(
        status.ok and status.checked > 0 and status.broken_seq is None,
        f"the audit chain verifies ({status.checked} events)",
    )

    for what in checked:
        print(f"ok  {what}")
    print(f"{len(checked)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--flow"]:
        sys.exit(flow())
    sys.exit(main())
