"""What a run costs the database (issue 13), on SQLite and PostgreSQL alike.

Counted with tests.runs.statements (statements sent, commits made, statements run while the
tenant's audit-chain head is locked). Before issue 13, a 3-step `run_execute` was 27 statements
and 12 commits (counted the same way) and `run_create` 13 statements and 3 commits, with the
chain head held for 9 statements.
"""

import pytest

from runs.executor import run_execute
from runs.models import Run, RunStatus, StepStatus
from runs.services import run_create
from swrly.audit.models import AuditEvent
from swrly.audit.verifier import audit_verify_chain
from swrly.audit.writer import Actor, chain_for
from swrly.keys.secret import ProviderSecret
from tests.runs.statements import counting
from tests.runs.test_executor import KEY, _queued_run, _steps

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, to be counted


def test_a_three_step_execution_costs_n_plus_two_commits(acme, key_store, provider_server):
    run = _queued_run(acme, _steps("a", "b", "c"))
    with counting() as counted:
        run = run_execute(run_id=str(run.pk))
    assert run.status == RunStatus.SUCCEEDED
    assert run.finished_at is not None  # the run answered with is the ended one, not re-read
    # claim; first start + key.consumed; two answer+start; last answer + end
    assert counted.commits <= 5, counted
    # 22 before issue 14 §3, whose claim counts the tenant's running runs (its running limit)
    assert len(counted.statements) <= 23, counted
    assert not [sql for sql in counted.statements if "SAVEPOINT" in sql]
    # three audited transactions (run.started, key.consumed, run.succeeded), each holding the
    # chain head for its last three statements: advance, insert, hash and MAC; the claim's also
    # counts the tenant's running runs there, after the advance (runs.fairness.may_start)
    assert [len(held) for held in counted.under_chain_lock] == [4, 3, 3]
    assert "COUNT(" in counted.under_chain_lock[0][1]
    steps = list(run.step_runs.order_by("position"))
    assert [s.status for s in steps] == [StepStatus.SUCCEEDED] * 3
    assert all(s.output_text and s.finished_at and s.started_at for s in steps)
    actions = list(
        AuditEvent.objects.filter(target=f"run:{run.pk}").order_by("seq").values_list("action")
    )
    assert [a for (a,) in actions] == [
        "run.created",
        "key.deposited",
        "run.started",
        "key.consumed",
        "run.succeeded",
    ]
    assert audit_verify_chain(chain_for(acme.tenant)).ok


def test_run_creation_is_one_commit_with_the_chain_head_held_six_statements(
    acme, key_store, provider_server
):
    workflow = _queued_run(acme, _steps("a")).workflow
    with counting() as counted:
        run = run_create(
            tenant=acme.tenant,
            workflow=workflow,
            run_input={},
            provider_keys={"anthropic": ProviderSecret(KEY)},
            actor=Actor.system("tests"),
        )
    assert counted.commits == 1, counted
    # 9 before issue 14 §3: + the tenant's queued runs counted before the deposit, and again
    # under the chain head
    assert len(counted.statements) <= 11, counted
    # advance the head, check the blocklist again, count the tenant's queued runs (the
    # race-safe admission: concurrent creations of the tenant count one after the other), count
    # the key, insert both events, write the head. The key's row is counted here, not earlier:
    # every run of the key updates it, so taken at the deposit its lock serialized a tenant's
    # POSTs for their whole transaction (bench/runs.py: 115 ms lock wait per POST at 16 clients).
    (held,) = counted.under_chain_lock
    assert len(held) == 6
    assert "custody_blockedkey" in held[1]
    assert "COUNT(" in held[2]
    assert '"runs_run"' in held[2]
    assert "tenants_providerkey" in held[3]
    assert not [
        sql
        for sql in counted.statements[: counted.statements.index(held[0])]
        if "tenants_providerkey" in sql
    ]
    stored = Run.objects.get(pk=run.pk)  # inserted with its keys' fingerprints and expiry
    assert stored.key_fingerprints == run.key_fingerprints
    assert stored.key_fingerprints["anthropic"]["fingerprint"]
    assert stored.keys_expire_at is not None
    assert stored.keys_expire_at == run.keys_expire_at
    events = AuditEvent.objects.filter(target=f"run:{run.pk}").order_by("seq")
    assert [e.action for e in events] == ["run.created", "key.deposited"]
