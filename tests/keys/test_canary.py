"""A canary key through the whole key service: it must surface nowhere but in `reveal()`.

The later tests follow canaries across the boundaries a key can cross after it was given: a
provider echoing it (raw or in any encoding) in an error or in a successful answer, a later
step's request to another provider, the DEBUG technical 500 page and the error e-mail.
"""

# The fixtures imported from provider_server are requested by name as arguments.
# ruff: noqa: F811

import logging
import secrets
import time
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.utils.log import AdminEmailHandler

from runs.executor import run_execute
from runs.models import Run, RunError, RunStatus, StepStatus
from swrly import keys
from swrly.audit.models import AuditEvent
from swrly.custody.services import provider_key_seen
from swrly.dev.sandbox import ECHO_ENCODINGS
from swrly.keys.encodings import base64_forms
from swrly.keys.errors import InvalidKey, KeyServiceError
from swrly.keys.fingerprint import legacy_fingerprint as fingerprint
from swrly.keys.redaction import REDACTED
from swrly.keys.secret import live_secrets
from swrly.keys.store import KEY_PATTERN
from tenants.models import Role
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    provider_expected_keys,
    provider_server,
    provider_server_factory,
    retry_delays,
)


def _database_text():
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            rows.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(rows)


def _redis_bytes(client):
    return b"\n".join(client.dump(name) or b"" for name in client.scan_iter(count=1000))


def test_the_canary_is_nowhere_but_in_reveal(acme, key_store, caplog):
    canary = "sk-ant-api03-canary" + secrets.token_urlsafe(40).replace("-", "x")
    tenant_id, run_id = str(acme.tenant.pk), str(uuid.uuid4())
    errors = []
    logger = logging.getLogger("swrly.tests.canary")

    with caplog.at_level(logging.DEBUG):
        keys.deposit(tenant_id=tenant_id, run_id=run_id, provider="anthropic", key=canary)
        print_ = fingerprint(provider="anthropic", key=canary)
        provider_key_seen(
            tenant=acme.tenant, provider="anthropic", fingerprint=print_.value, hint=print_.hint
        )
        raw = _redis_bytes(key_store)
        for attempt in (
            lambda: keys.deposit(
                tenant_id=tenant_id, run_id=run_id, provider="anthropic", key=canary
            ),
            lambda: keys.deposit(
                tenant_id=tenant_id, run_id="r", provider="anthropic", key=canary + "\n"
            ),
            lambda: keys.deposit(tenant_id=tenant_id, run_id="r", provider="nope", key=canary),
        ):
            with pytest.raises(KeyServiceError) as caught:
                attempt()
            errors.append(caught.value)
        secret = keys.consume(tenant_id=tenant_id, run_id=run_id, provider="anthropic")
        logger.debug("consumed %s %r %s", secret, secret, f"{secret}")
        logger.debug("provider answered: invalid x-api-key %s", secret.reveal())
        with pytest.raises(KeyServiceError) as caught:
            keys.consume(tenant_id=tenant_id, run_id=run_id, provider="anthropic")
        errors.append(caught.value)
        assert secret.reveal() == canary
        secret.discard()

    assert isinstance(errors[1], InvalidKey)
    assert canary.encode() not in raw
    assert canary not in _database_text()
    assert canary not in caplog.text
    for error in errors:
        assert canary not in str(error)
        assert canary not in repr(error)
        assert canary[-12:] not in str(error)
    # nothing is left in the key store once the run has taken its key
    assert list(key_store.scan_iter(match="swrly:byok:*")) == []


# --- Across the boundaries a key crosses after it was given -----------------------------------


def _canary(label: str = "canary") -> str:
    """A key in the accepted alphabet, not shaped like a provider key: only its value betrays
    it, so only redaction by value (in every encoding) can catch it."""
    return f"{label}-" + secrets.token_urlsafe(32)


def _traces(canary: str) -> list[str]:
    """Every text that would give the canary away: itself, each of its echoed encodings, and
    each base64 fragment only it produces."""
    forms = {canary, *(encode(canary) for encode in ECHO_ENCODINGS.values())}
    forms.update(base64_forms(canary))
    return sorted(forms)


def _assert_absent(canary: str, *texts: str) -> None:
    for text in texts:
        for trace in _traces(canary):
            assert trace not in text
        assert canary.encode().hex() not in text.lower()


def _trigger(world, steps, provider_keys, run_input=None, client=None):
    api = client or world.api(Role.DEVELOPER)
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert workflow.status_code == 201, workflow.content
    body = {"workflow": workflow.json()["id"], "provider_keys": provider_keys}
    if run_input is not None:
        body["input"] = run_input
    return api.post("/api/v1/runs/", body, "application/json")


def _run(world, steps, provider_keys, run_input=None, pause=time.sleep):
    response = _trigger(world, steps, provider_keys, run_input)
    assert response.status_code == 202, response.content
    return run_execute(run_id=response.json()["id"], pause=pause)


def _everything_shown(world, run, caplog) -> list[str]:
    """The run as every surface shows it: database rows, API, page, logs."""
    run.refresh_from_db()
    steps = list(run.step_runs.order_by("position"))
    owner = world.client(Role.OWNER)
    page = owner.get(f"/t/{world.tenant.slug}/runs/{run.pk}/")
    assert page.status_code == 200
    api = world.api(Role.OWNER).get(f"/api/v1/runs/{run.pk}/")
    assert api.status_code == 200
    return [
        run.error_message,
        *(step.error + step.output_text for step in steps),
        page.content.decode(),
        api.content.decode(),
        caplog.text,
        _database_text(),
    ]


@pytest.mark.parametrize("encoding", sorted(ECHO_ENCODINGS))
def test_a_key_echoed_in_an_error_in_any_encoding_is_redacted_everywhere(
    acme, key_store, provider_server, retry_delays, settings, caplog, encoding
):
    # given a provider that answers 500 (retried once, so the failure is also logged) quoting
    # the key it was sent, encoded
    settings.PROVIDER_MAX_RETRIES = 1
    canary = _canary()
    steps = [
        {
            "name": "s0",
            "provider": "anthropic",
            "model": "m",
            "prompt": f"[sandbox:status=500] [sandbox:echo-key={encoding}] hi",
        }
    ]
    # when the run fails
    with caplog.at_level(logging.DEBUG):
        run = _run(acme, steps, {"anthropic": canary}, pause=retry_delays.append)
    # then the stored error, the logs, the page and the API show it redacted
    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.PROVIDER_ERROR)
    assert "key presented: " in run.step_runs.get().error
    assert REDACTED in run.step_runs.get().error
    assert any("retrying" in record.getMessage() for record in caplog.records)
    _assert_absent(canary, *_everything_shown(acme, run, caplog))


@pytest.mark.parametrize("encoding", sorted(ECHO_ENCODINGS))
def test_a_key_echoed_in_a_successful_answer_never_reaches_the_next_provider(
    acme, key_store, provider_server, caplog, encoding
):
    # given a workflow anthropic → openai whose second prompt is the first step's output, and
    # an anthropic answer that echoes the anthropic key, encoded
    anthropic_key, openai_key = _canary("anthropic"), _canary("openai")
    steps = [
        {
            "name": "s0",
            "provider": "anthropic",
            "model": "m",
            "prompt": f"[sandbox:answer-key={encoding}] summarize",
        },
        {"name": "s1", "provider": "openai", "model": "m", "prompt": "{{ steps.s0.output }}"},
    ]
    # when the run goes through both steps
    with caplog.at_level(logging.DEBUG):
        run = _run(acme, steps, {"anthropic": anthropic_key, "openai": openai_key})
    # then the output was redacted before it was used: stored, and sent to openai
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    first, _second = run.step_runs.order_by("position")
    assert first.output_text.startswith("sandbox:")
    assert REDACTED in first.output_text
    to_openai = [r for r in provider_server.requests if r.path == "/v1/chat/completions"]
    assert len(to_openai) == 1
    sent = repr(to_openai[0].body) + repr(to_openai[0].headers)
    assert REDACTED in sent
    _assert_absent(anthropic_key, sent, *_everything_shown(acme, run, caplog))
    assert openai_key in to_openai[0].headers["authorization"]  # it went, with its own key


def test_a_request_carrying_another_providers_key_is_refused_and_audited(
    acme, key_store, provider_server, caplog
):
    # given an openai step whose prompt, once rendered, is the anthropic key (assembled from
    # two halves of the input, so nothing before the request itself holds it whole)
    anthropic_key, openai_key = _canary("anthropic"), _canary("openai")
    half = len(anthropic_key) // 2
    steps = [
        {"name": "s0", "provider": "anthropic", "model": "m", "prompt": "hello"},
        {
            "name": "s1",
            "provider": "openai",
            "model": "m",
            "prompt": "{{ input.a }}{{ input.b }}",
        },
    ]
    run_input = {"a": anthropic_key[:half], "b": anthropic_key[half:]}
    # when the run reaches the openai step
    with caplog.at_level(logging.DEBUG):
        run = _run(acme, steps, {"anthropic": anthropic_key, "openai": openai_key}, run_input)
    # then nothing was sent to openai; the step and the run say why; the refusal is audited
    assert (run.status, run.error_code) == (RunStatus.FAILED, RunError.KEY_LEAK_BLOCKED)
    first, second = run.step_runs.order_by("position")
    assert (first.status, second.status) == (StepStatus.SUCCEEDED, StepStatus.FAILED)
    assert "not sent" in second.error
    assert [r.path for r in provider_server.requests] == ["/v1/messages"]
    blocked = AuditEvent.objects.get(target=f"run:{run.pk}", action="key.leak_blocked")
    assert blocked.metadata == {"provider": "openai", "step": "s1"}
    released = AuditEvent.objects.get(target=f"run:{run.pk}", action="run.failed")
    assert released.metadata["error_code"] == "key_leak_blocked"
    _assert_absent(anthropic_key, *_everything_shown(acme, run, caplog))
    _assert_absent(openai_key, *_everything_shown(acme, run, caplog))


@pytest.mark.parametrize("encoding", ["raw", "base64", "json", "url"])
def test_an_input_carrying_a_key_is_refused_before_anything_is_stored(
    acme, key_store, provider_server, encoding
):
    canary = _canary("anthropic")
    steps = [{"name": "s0", "provider": "anthropic", "model": "m", "prompt": "{{ input.text }}"}]
    echoed = ECHO_ENCODINGS[encoding](canary)
    response = _trigger(acme, steps, {"anthropic": canary}, {"text": f"use {echoed} please"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["input"] == [
        "contains the anthropic key; keys go only in provider_keys"
    ]
    assert not Run.objects.exists()
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    _assert_absent(canary, _database_text(), response.content.decode())


@pytest.fixture
def failing_key_deposit_audit(db, settings):
    """The audit store refuses `key.deposited` events: a real database trigger, so creating a
    run fails with a database error after its keys were read (and one was deposited)."""
    settings.PROVIDER_BASE_URLS = {
        "anthropic": "https://api.anthropic.com",
        "openai": "https://api.openai.com",
    }
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION swrly_test_refuse_deposit() RETURNS trigger AS $$ BEGIN "
                "IF NEW.action = 'key.deposited' THEN "
                "RAISE EXCEPTION 'the audit store refused the event'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER swrly_test_refuse_deposit BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION swrly_test_refuse_deposit()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER swrly_test_refuse_deposit BEFORE INSERT ON {table} "
                "WHEN NEW.action = 'key.deposited' "
                "BEGIN SELECT RAISE(ABORT, 'the audit store refused the event'); END"
            )
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            f"DROP TRIGGER swrly_test_refuse_deposit ON {table}"
            if connection.vendor == "postgresql"
            else "DROP TRIGGER swrly_test_refuse_deposit"
        )
        if connection.vendor == "postgresql":
            cursor.execute("DROP FUNCTION swrly_test_refuse_deposit()")


# Django renders the technical 500 page as HTML for a client that accepts it, else as text.
@pytest.mark.parametrize("accept", ["*/*", "application/json"])
def test_a_500_during_run_creation_shows_no_key_on_the_debug_page(
    acme, key_store, failing_key_deposit_audit, settings, caplog, accept
):
    # given DEBUG on, and an audit store that fails once the keys were read
    settings.DEBUG = True
    canaries = [_canary("anthropic"), _canary("openai")]
    # when a run is created
    with caplog.at_level(logging.DEBUG):
        response = Client(
            raise_request_exception=False,
            headers={
                "Authorization": f"Bearer {acme.tokens[Role.DEVELOPER]}",
                "Accept": accept,
            },
        ).post(
            "/api/v1/runs/",
            {
                "workflow": _workflow_id(acme),
                "provider_keys": {"anthropic": canaries[0], "openai": canaries[1]},
            },
            "application/json",
        )
    # then the technical 500 page (frames, locals, request) shows neither key
    assert response.status_code == 500
    page = response.content.decode()
    assert "the audit store refused the event" in page  # it is Django's technical page
    assert "in run_create" in page or "run_create" in page
    if accept == "*/*":  # the HTML page shows every frame's local variables
        assert "Local vars" in page
        assert "provider_keys" in page
    for canary in canaries:
        _assert_absent(canary, page, caplog.text)
    assert not Run.objects.exists()
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []
    assert not set(canaries) & live_secrets()  # forgotten once the response was finished


def test_a_500_during_run_creation_mails_no_key_to_the_admins(
    acme, key_store, failing_key_deposit_audit, settings, mailoutbox, caplog, monkeypatch
):
    # given error e-mails on (ADMINS, DEBUG off; Django's locmem outbox as the mail server),
    # with the HTML report attached: it shows every frame's local variables
    settings.DEBUG = False
    settings.ADMINS = [("ops", "ops@swrly.invalid")]
    handlers = [h for h in logging.getLogger("django").handlers if isinstance(h, AdminEmailHandler)]
    assert handlers  # Django's default logging mails errors to ADMINS
    for handler in handlers:
        monkeypatch.setattr(handler, "include_html", True)
    canaries = [_canary("anthropic"), _canary("openai")]
    # when a run is created and the audit store fails after the keys were read
    with caplog.at_level(logging.DEBUG):
        response = Client(
            raise_request_exception=False,
            headers={"Authorization": f"Bearer {acme.tokens[Role.DEVELOPER]}"},
        ).post(
            "/api/v1/runs/",
            {
                "workflow": _workflow_id(acme),
                "provider_keys": {"anthropic": canaries[0], "openai": canaries[1]},
            },
            "application/json",
        )
    # then the admins got the report, with the traceback and its variables, and no key
    assert response.status_code == 500
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    texts = [mail.subject, mail.body, *(content for content, _ in mail.alternatives)]
    assert "the audit store refused the event" in mail.body
    html = "".join(content for content, _ in mail.alternatives)
    assert "Local Vars" in html
    assert "provider_keys" in html
    for canary in canaries:
        _assert_absent(canary, *texts, response.content.decode(), caplog.text)
    assert list(key_store.scan_iter(match=KEY_PATTERN)) == []


def _workflow_id(world) -> str:
    api = world.api(Role.DEVELOPER)
    steps = [
        {"name": "s0", "provider": "anthropic", "model": "m", "prompt": "hello"},
        {"name": "s1", "provider": "openai", "model": "m", "prompt": "there"},
    ]
    workflow = api.post("/api/v1/workflows/", {"name": "w", "steps": steps}, "application/json")
    assert workflow.status_code == 201, workflow.content
    return workflow.json()["id"]
