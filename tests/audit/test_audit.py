import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from swrly.audit.models import AppendOnlyError, AuditEvent
from swrly.audit.verifier import audit_verify_chain
from swrly.audit.writer import GENESIS_HASH, Actor, audit_record, chain_for
from tenants.models import Tenant

pytestmark = pytest.mark.usefixtures("audit_test_event")

SYSTEM = Actor.system("tests")


def _record(tenant, n=1, **metadata):
    return [
        audit_record(
            tenant=tenant, action="test.event", actor=SYSTEM, metadata={"i": i, **metadata}
        )
        for i in range(n)
    ]


@pytest.fixture
def tenant(db):
    return Tenant.objects.create(slug="chain", name="Chain")


def test_events_are_linked_in_order(tenant):
    first, second, third = _record(tenant, 3)
    assert (first.seq, second.seq, third.seq) == (1, 2, 3)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert audit_verify_chain(chain_for(tenant)).ok


def test_each_tenant_has_its_own_chain(tenant):
    other = Tenant.objects.create(slug="other", name="Other")
    _record(tenant, 2)
    (event,) = _record(other)
    assert event.seq == 1
    assert event.prev_hash == GENESIS_HASH


def test_orm_refuses_update_and_delete(tenant):
    (event,) = _record(tenant)
    event.action = "changed"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="changed")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger is PostgreSQL's")
def test_postgresql_trigger_refuses_raw_update_and_delete(tenant):
    (event,) = _record(tenant)
    for statement in (
        "UPDATE tenants_auditevent SET action = 'x' WHERE id = %s",
        "DELETE FROM tenants_auditevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            connection.cursor().execute(statement, [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


def _tamper(sql, params):
    """What an attacker with database access does: bypass the ORM and the trigger."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A superuser can switch ordinary triggers off for the session.
            cursor.execute("SET session_replication_role = replica")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = origin")


def test_verify_audit_names_an_altered_event(tenant, capsys):
    events = _record(tenant, 4)
    call_command("verify-audit", "--tenant", "chain")
    _tamper(
        "UPDATE tenants_auditevent SET metadata = %s WHERE id = %s",
        ['{"i": 99}', events[2].pk],
    )
    with pytest.raises(CommandError, match="broken"):
        call_command("verify-audit", "--tenant", "chain")
    out = capsys.readouterr().out
    assert f"at #3 (event id {events[2].pk})" in out
    assert "altered" in out


def test_verify_audit_notices_an_event_moved_to_another_tenant(tenant):
    other = Tenant.objects.create(slug="other", name="Other")
    events = _record(tenant, 2)
    _tamper(
        "UPDATE tenants_auditevent SET tenant_id = %s WHERE id = %s", [other.pk.hex, events[0].pk]
    )
    report = audit_verify_chain(chain_for(tenant))
    assert not report.ok
    assert "moved" in report.reason


def test_values_the_database_normalizes_still_verify(tenant):
    from django.test import RequestFactory

    request = RequestFactory().get("/", REMOTE_ADDR="2001:0db8:0000:0000:0000:0000:0000:0001")
    audit_record(
        tenant=tenant,
        action="test.event",
        actor=SYSTEM,
        metadata={"big": 1e20, "small": 0.1, "nested": [1.5, {"x": 2.0}]},
        request=request,
    )
    assert audit_verify_chain(chain_for(tenant)).ok


def test_verify_audit_notices_a_deleted_event(tenant):
    events = _record(tenant, 3)
    _tamper("DELETE FROM tenants_auditevent WHERE id = %s", [events[1].pk])
    report = audit_verify_chain(chain_for(tenant))
    assert not report.ok
    assert report.broken_seq == 3
    assert "gap" in report.reason


def test_verify_audit_notices_a_removed_tail(tenant):
    events = _record(tenant, 3)
    _tamper("DELETE FROM tenants_auditevent WHERE id = %s", [events[2].pk])
    report = audit_verify_chain(chain_for(tenant))
    assert not report.ok
    assert "removed from the end" in report.reason


def test_action_fails_when_its_audit_event_cannot_be_written(tenant):
    # given an action whose audit write fails (metadata that is not JSON)
    def create_tenant_with_audit():
        with transaction.atomic():
            Tenant.objects.create(slug="half-done", name="Half")
            audit_record(
                tenant=tenant, action="member.added", actor=SYSTEM, metadata={"role": object()}
            )

    with pytest.raises(TypeError):
        create_tenant_with_audit()
    # then the action did not happen either
    assert not Tenant.objects.filter(slug="half-done").exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_neither_fork_nor_skip():
    tenant = Tenant.objects.create(slug="busy", name="Busy")
    writers, per_writer = 8, 15
    errors = []
    barrier = threading.Barrier(writers)

    def write(n):
        try:
            barrier.wait()
            for i in range(per_writer):
                audit_record(
                    tenant=tenant, action="test.event", actor=SYSTEM, metadata={"w": n, "i": i}
                )
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
    seqs = sorted(AuditEvent.objects.filter(tenant=tenant).values_list("seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 1))
    report = audit_verify_chain(chain_for(tenant))
    assert report.ok, report.reason
    assert report.checked == writers * per_writer
