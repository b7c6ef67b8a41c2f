"""The run-creation request path: a committed run keeps its tokens and answers without the
database, a slow key store never holds the audit-chain lock, and the orphan sweep deletes the
tokens no run will take."""

import os
import signal
import uuid

import pytest
from django.db import connection
from django.test import Client

from runs import services
from runs.models import Run, RunStatus
from runs.services import orphan_tokens_sweep, run_create
from swrly import keys
from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor
from swrly.celery import app
from swrly.dev.devstack import start_embedded_valkey
from swrly.keys.secret import ProviderSecret
from swrly.keys.store import KEY_PATTERN, redis_key
from tenants.models import Role

KEY = "sk-ant-canary-sweep-0123456789abcdef"


def _age(client, name, seconds=600):
    """Make a token look untouched for `seconds` (RESTORE … IDLETIME), keeping its TTL."""
    ttl, value = client.pttl(name), client.dump(name)
    client.restore(name, ttl, value, replace=True, idletime=seconds)


def _workflow(world):
    from runs.services import workflow_create

    return workflow_create(
        tenant=world.tenant,
        name="one",
        steps=[{"name": "a", "provider": "anthropic", "model": "claude-x", "prompt": "Hi"}],
        actor=Actor.system("tests"),
    )


def _deposit(world, run_id):
    keys.deposit(tenant_id=world.tenant.pk, run_id=run_id, provider="anthropic", key=KEY)
    return redis_key(tenant_id=world.tenant.pk, run_id=run_id, provider="anthropic")


def test_the_sweep_deletes_only_tokens_no_run_will_take(acme, key_store):
    # given: tokens of a queued run, of a finished run, of no run, and a fresh one of no run
    queued, finished = acme.run(), acme.run()
    Run.objects.filter(pk=finished.pk).update(status=RunStatus.SUCCEEDED)
    names = {
        "queued": _deposit(acme, queued.pk),
        "finished": _deposit(acme, finished.pk),
        "no run": _deposit(acme, uuid.uuid4()),
        "fresh": _deposit(acme, uuid.uuid4()),
    }
    for label in ("queued", "finished", "no run"):
        _age(key_store, names[label])

    # when
    deleted = orphan_tokens_sweep()

    # then: the queued run keeps its token, a deposit in flight is not touched
    assert deleted == 2
    assert key_store.exists(names["queued"])
    assert key_store.exists(names["fresh"])
    assert not key_store.exists(names["finished"])
    assert not key_store.exists(names["no run"])
    discarded = AuditEvent.objects.filter(tenant=acme.tenant, action="key.discarded")
    reasons = sorted(e.metadata["reason"].split(":")[0] for e in discarded)
    assert reasons == ["no such run", "the run is succeeded"]
    assert all(e.actor == "system:token sweeper" for e in discarded)
    assert orphan_tokens_sweep() == 0


def test_the_key_store_is_called_before_the_audit_chain_is_locked(acme, key_store, monkeypatch):
    workflow = _workflow(acme)
    statements: list[str] = []
    chain_sql_before_deposit: list[bool] = []
    deposit = services.keys.deposit

    def spy(**kwargs):  # calls through: records only when the deposit happened
        chain_sql_before_deposit.append(any("auditchainhead" in s for s in statements))
        return deposit(**kwargs)

    monkeypatch.setattr(services.keys, "deposit", spy)

    def record(execute, sql, params, many, context):
        statements.append(sql.lower())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        run_create(
            tenant=acme.tenant,
            workflow=workflow,
            run_input={},
            provider_keys={"anthropic": ProviderSecret(KEY)},
            actor=Actor.system("tests"),
        )
    assert chain_sql_before_deposit == [False]
    assert any("auditchainhead" in s for s in statements)


class _Killed(BaseException):
    """What gunicorn's worker timeout raises at an arbitrary point (SystemExit)."""


def test_a_request_killed_after_commit_leaves_the_run_its_tokens(acme, transactional_db, key_store):
    from celery.signals import before_task_publish

    workflow = _workflow(acme)

    def killed(**_):
        raise _Killed

    before_task_publish.connect(killed, weak=False)
    try:
        with pytest.raises(_Killed):
            run_create(
                tenant=acme.tenant,
                workflow=workflow,
                run_input={},
                provider_keys={"anthropic": ProviderSecret(KEY)},
                actor=Actor.system("tests"),
            )
    finally:
        before_task_publish.disconnect(killed)
    run = Run.objects.get()
    assert run.status == RunStatus.QUEUED
    # the committed run still has its token: a worker (or the reaper) ends it, not the request
    assert key_store.exists(
        redis_key(tenant_id=acme.tenant.pk, run_id=run.pk, provider="anthropic")
    )


def test_a_hung_key_store_answers_503_and_the_sweep_leaves_no_token(
    acme, transactional_db, settings
):
    workflow = _workflow(acme)
    server = start_embedded_valkey()
    try:
        settings.BYOK_REDIS_URL = server.connection_url + "/0"
        client = server.client()
        pid = server._process.pid
        os.kill(pid, signal.SIGSTOP)  # the key store hangs: connections open, nothing answers
        try:
            response = Client(headers={"Authorization": f"Bearer {acme.tokens[Role.OWNER]}"}).post(
                "/api/v1/runs/",
                {"workflow": str(workflow.pk), "provider_keys": {"anthropic": KEY}},
                "application/json",
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        assert response.status_code == 503
        assert not Run.objects.exists()
        assert not AuditEvent.objects.filter(action__in=["run.created", "key.deposited"]).exists()
        # whatever SET Redis applied after it came back, the sweep removes it
        for name in client.scan_iter(match=KEY_PATTERN):
            _age(client, name)
        orphan_tokens_sweep()
        assert list(client.scan_iter(match=KEY_PATTERN)) == []
        assert app.conf.broker_url  # the broker was never involved
    finally:
        server.stop()


def test_after_the_commit_the_request_needs_no_database(acme, transactional_db, key_store):
    from celery.signals import before_task_publish

    workflow = _workflow(acme)
    committed = []
    after_commit: list[str] = []

    def published(**_):
        committed.append(True)

    def record(execute, sql, params, many, context):
        if committed:
            after_commit.append(sql)
        return execute(sql, params, many, context)

    before_task_publish.connect(published, weak=False)
    try:
        with connection.execute_wrapper(record):
            response = Client(
                headers={"Authorization": f"Bearer {acme.tokens[Role.DEVELOPER]}"}
            ).post(
                "/api/v1/runs/",
                {"workflow": str(workflow.pk), "provider_keys": {"anthropic": KEY}},
                "application/json",
            )
    finally:
        before_task_publish.disconnect(published)
    assert response.status_code == 202
    assert committed
    assert after_commit == []  # the answer (steps included) came from the objects in hand
    assert [step["name"] for step in response.json()["steps"]] == ["a"]
