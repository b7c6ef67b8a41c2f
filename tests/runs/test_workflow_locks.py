"""Writers of a workflow take their locks in one order: the workflow row, then the audit chain.

Found by the contract run on PostgreSQL: a DELETE racing a PATCH of the same workflow deadlocked
(the delete audited first and then waited for the row; the update held the row and waited for
the chain) and one of them answered 500.
"""

import threading

import pytest
from django.db import connection, connections, transaction

from runs.models import Workflow
from runs.services import workflow_delete
from tenants.audit import Actor, audit_record
from tenants.models import AuditEvent


def _waiting_for_a_lock() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_workflow_deleted_while_it_is_updated_does_not_deadlock(acme):
    # given: an update holds the workflow's row and has yet to write its audit event
    workflow = acme.workflow()
    actor = Actor.system("tests")
    holding, errors = threading.Event(), []
    release = threading.Event()

    def update() -> None:
        try:
            with transaction.atomic():
                Workflow.objects.filter(pk=workflow.pk).update(description="changed")
                holding.set()
                release.wait(timeout=30)
                audit_record(
                    tenant=acme.tenant,
                    action="workflow.updated",
                    actor=actor,
                    target=f"workflow:{workflow.pk}",
                    metadata={"fields": ["description"]},
                )
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def delete() -> None:
        try:
            holding.wait(timeout=30)
            workflow_delete(workflow=Workflow.objects.get(pk=workflow.pk), actor=actor)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    updater, deleter = threading.Thread(target=update), threading.Thread(target=delete)
    updater.start()
    deleter.start()
    # when: the delete is blocked on a lock, the update goes on to audit
    holding.wait(timeout=30)
    for _ in range(3000):
        if _waiting_for_a_lock():
            break
        threading.Event().wait(0.01)
    release.set()
    updater.join(timeout=60)
    deleter.join(timeout=60)
    # then: both committed, in order
    assert errors == []
    assert not Workflow.objects.filter(pk=workflow.pk).exists()
    actions = list(
        AuditEvent.objects.filter(tenant=acme.tenant, target=f"workflow:{workflow.pk}")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions[-2:] == ["workflow.updated", "workflow.deleted"]
