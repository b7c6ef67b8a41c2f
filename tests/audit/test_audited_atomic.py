"""audited_atomic: a transaction's events appended together, the chain head locked last."""

import threading

import pytest
from django.db import connection, transaction

from swrly.audit.models import AuditChainHead, AuditEvent
from swrly.audit.verifier import audit_verify_chain
from swrly.audit.writer import (
    Actor,
    audit_record,
    audit_under_lock,
    audited_atomic,
    chain_for,
)
from tenants.models import Tenant
from tests.runs.statements import counting

SYSTEM = Actor.system("tests")
pytestmark = pytest.mark.usefixtures("audit_test_event")


def _record(tenant, n):
    return audit_record(tenant=tenant, action="test.event", actor=SYSTEM, metadata={"i": n})


def _actions(tenant):
    return list(
        AuditEvent.objects.filter(tenant=tenant).order_by("seq").values_list("metadata", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_the_events_are_appended_together_after_the_work_and_the_head_is_held_three_statements():
    tenant = Tenant.objects.create(slug="batch", name="Batch")
    _record(tenant, 0)  # the chain exists
    with counting() as counted, audited_atomic():
        first = _record(tenant, 1)
        assert first.pk is None  # kept, not written yet
        Tenant.objects.filter(pk=tenant.pk).update(name="Batch 2")  # the audited work
        second = _record(tenant, 2)
    assert (first.seq, second.seq) == (2, 3)  # the objects returned were filled in
    assert first.pk is not None
    assert second.prev_hash == first.hash
    assert first.created_at <= second.created_at
    assert [m["i"] for m in _actions(tenant)] == [0, 1, 2]
    assert counted.commits == 1
    (held,) = counted.under_chain_lock
    assert len(held) == 3  # advance the head, insert both events, write its hash and MAC
    assert held[0].startswith("UPDATE")
    assert "RETURNING" in held[0]
    assert audit_verify_chain(chain_for(tenant)).ok


@pytest.mark.django_db(transaction=True)
def test_a_chain_first_event_in_an_audited_transaction_makes_its_head():
    tenant = Tenant.objects.create(slug="fresh", name="Fresh")
    AuditChainHead.objects.filter(chain=chain_for(tenant)).delete()
    with audited_atomic():
        _record(tenant, 1)
    head = AuditChainHead.objects.get(chain=chain_for(tenant))
    assert head.seq == 1
    assert audit_verify_chain(chain_for(tenant)).ok


@pytest.mark.django_db(transaction=True)
def test_nothing_is_appended_when_the_block_fails_or_a_savepoint_in_it_is_rolled_back():
    tenant = Tenant.objects.create(slug="undo", name="Undo")
    _record(tenant, 0)

    def failing_action():
        with audited_atomic():
            _record(tenant, 1)
            raise RuntimeError("the action failed")

    with pytest.raises(RuntimeError):
        failing_action()
    with audited_atomic():
        _record(tenant, 2)
        try:
            with transaction.atomic():  # undone work: its event must not be appended
                _record(tenant, 3)
                raise ValueError
        except ValueError:
            pass
        with audited_atomic():  # nested: joins the outer batch
            _record(tenant, 4)
    assert [m["i"] for m in _actions(tenant)] == [0, 2, 4]
    assert AuditChainHead.objects.get(chain=chain_for(tenant)).seq == 3
    assert audit_verify_chain(chain_for(tenant)).ok


@pytest.mark.django_db(transaction=True)
def test_a_check_under_the_lock_runs_after_the_head_is_locked_and_can_refuse():
    tenant = Tenant.objects.create(slug="check", name="Check")
    _record(tenant, 0)
    seen = []

    def check():
        seen.append(list(counted.statements))
        raise PermissionError("refused under the lock")

    def refused_action():
        with audited_atomic():
            _record(tenant, 1)
            audit_under_lock(check)

    with counting() as counted, pytest.raises(PermissionError):
        refused_action()
    (before_check,) = seen
    assert "tenants_auditchainhead" in before_check[-1]  # the lock was the last statement
    assert [m["i"] for m in _actions(tenant)] == [0]
    assert AuditChainHead.objects.get(chain=chain_for(tenant)).seq == 1
    with pytest.raises(RuntimeError):
        audit_under_lock(check)  # only inside an audited transaction


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_and_single_events_neither_fork_nor_skip():
    tenant = Tenant.objects.create(slug="busy-batches", name="Busy")
    writers, rounds = 6, 8
    errors = []
    barrier = threading.Barrier(writers)

    def write(n):
        try:
            barrier.wait()
            for i in range(rounds):
                if n % 2:
                    _record(tenant, n * 100 + i)  # appended at once, as outside a batch
                else:
                    with audited_atomic():
                        for j in range(1 + i % 3):
                            _record(tenant, n * 100 + i * 10 + j)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    expected = (writers // 2) * rounds + (writers // 2) * sum(1 + i % 3 for i in range(rounds))
    rows = list(AuditEvent.objects.filter(tenant=tenant).order_by("seq"))
    assert [row.seq for row in rows] == list(range(1, expected + 1))
    times = [row.created_at for row in rows]
    assert times == sorted(times)  # taken under the lock: seq order is time order
    report = audit_verify_chain(chain_for(tenant))
    assert report.ok, report.reason
    assert report.checked == expected
