"""Writers take their locks in one order: the entity row, then the audit chain (PostgreSQL).

Found by the seeded contract run on PostgreSQL, each as a 500: a DELETE racing a PATCH of the
same workflow deadlocked (the delete audited first and then waited for the row; the update held
the row and waited for the chain), and removing a member locked the tenant row too, which any
concurrent audit write of the tenant needs at commit (its event references the tenant); and a
denied access recorded inside a transaction that had already audited waited for the audit flood
counter held by another denied access waiting for the chain head (every chain writer now takes
the head first).
"""

import threading
from collections.abc import Callable

import pytest
from django.db import connection, connections, transaction

from runs.models import Workflow
from runs.services import workflow_delete
from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor, audit_record
from tenants.authority import Principal
from tenants.models import Membership, Role
from tenants.services import membership_remove


def _waiting_for_a_lock() -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]


def _race(first: Callable[[Callable[[], None]], None], second: Callable[[], None]) -> list:
    """Run `first` until it calls `pause()` (holding its locks), then `second`; once `second`
    waits for a lock, let `first` go on. Returns what either raised (a deadlock among them)."""
    holding, release, errors = threading.Event(), threading.Event(), []

    def pause() -> None:
        holding.set()
        release.wait(timeout=30)

    def run(write: Callable[[], None]) -> None:
        try:
            write()
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def after_first() -> None:
        holding.wait(timeout=30)
        second()

    threads = [
        threading.Thread(target=run, args=(lambda: first(pause),)),
        threading.Thread(target=run, args=(after_first,)),
    ]
    for thread in threads:
        thread.start()
    holding.wait(timeout=30)
    for _ in range(3000):  # until the second writer waits for a lock the first holds
        if _waiting_for_a_lock():
            break
        threading.Event().wait(0.01)
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    return errors


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_workflow_deleted_while_it_is_updated_does_not_deadlock(acme):
    # given: an update holds the workflow's row and has yet to write its audit event
    workflow = acme.workflow()
    actor = Actor.system("tests")

    def update(pause: Callable[[], None]) -> None:
        with transaction.atomic():
            Workflow.objects.filter(pk=workflow.pk).update(description="changed")
            pause()
            audit_record(
                tenant=acme.tenant,
                action="workflow.updated",
                actor=actor,
                target=f"workflow:{workflow.pk}",
                metadata={"fields": ["description"]},
            )

    def delete() -> None:
        workflow_delete(workflow=Workflow.objects.get(pk=workflow.pk), actor=actor)

    # when: the delete is blocked on a lock, the update goes on to audit
    errors = _race(update, delete)
    # then: both committed, in order
    assert errors == []
    assert not Workflow.objects.filter(pk=workflow.pk).exists()
    actions = list(
        AuditEvent.objects.filter(tenant=acme.tenant, target=f"workflow:{workflow.pk}")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions[-2:] == ["workflow.updated", "workflow.deleted"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_member_removed_while_the_tenant_is_audited_does_not_deadlock(acme):
    # given: a transaction holds the tenant's audit chain and has yet to commit its event
    membership = Membership.objects.get(user=acme.users[Role.DEVELOPER])
    actor = Actor.system("tests")

    def audit(pause: Callable[[], None]) -> None:
        with transaction.atomic():
            audit_record(tenant=acme.tenant, action="run.created", actor=actor, target="x")
            pause()

    def remove() -> None:
        membership_remove(membership=membership, by=Principal.console("tests"))

    # when: the removal waits for the chain, the audit commits
    errors = _race(audit, remove)
    # then
    assert errors == []
    assert not Membership.objects.filter(pk=membership.pk).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_a_denied_access_inside_an_audited_transaction_does_not_deadlock_with_another(acme):
    # Found by the seeded contract on PostgreSQL (a 503 on DELETE /members/{id}/): a transaction
    # that audited first and then recorded a denied access (the flood-bounded writer) waited for
    # the flood counter row, held by another denied access that waited for the chain head.
    from tenants.access import access_denied

    actor = Actor.system("tests")

    def audited_then_denied(pause: Callable[[], None]) -> None:
        with transaction.atomic():
            audit_record(tenant=acme.tenant, action="token.revoked", actor=actor, target="t")
            pause()
            access_denied(tenant=acme.tenant, actor=actor, target="t", reason="1st", request=None)

    def denied() -> None:
        access_denied(tenant=acme.tenant, actor=actor, target="u", reason="2nd", request=None)

    assert _race(audited_then_denied, denied) == []
    assert AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").count() == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")
def test_writers_lock_only_their_own_rows(acme, globex):
    # Found by the seeded contract on PostgreSQL (503s on DELETE /tokens/{id}/ and /members/…):
    # a model's default ordering joins the tenant, and a bare FOR UPDATE then locked the tenant
    # row too — which every concurrent audit event of the tenant needs at commit (its foreign
    # key check), so they deadlocked. Every row lock names its own table (FOR UPDATE OF …).
    from django.test.utils import CaptureQueriesContext

    owner, admin = acme.api(Role.OWNER), acme.api(Role.ADMIN)
    developer = Membership.objects.get(tenant=acme.tenant, user=acme.users[Role.DEVELOPER])
    workflow = acme.workflow()
    with CaptureQueriesContext(connection) as captured:
        created = admin.post(
            "/api/v1/tokens/", {"name": "t", "role": Role.DEVELOPER}, "application/json"
        )
        assert created.status_code == 201
        assert admin.delete(f"/api/v1/tokens/{created.json()['id']}/").status_code == 200
        assert (
            owner.patch(
                f"/api/v1/members/{developer.pk}/", {"role": Role.AUDITOR}, "application/json"
            ).status_code
            == 200
        )
        assert owner.delete(f"/api/v1/members/{developer.pk}/").status_code == 204
        assert owner.delete(f"/api/v1/workflows/{workflow.pk}/").status_code == 204
        assert globex.api(Role.OWNER).get(f"/api/v1/workflows/{workflow.pk}/").status_code == 404
    locking = [q["sql"] for q in captured.captured_queries if "FOR UPDATE" in q["sql"]]
    assert locking  # the services did lock rows
    for sql in locking:
        assert "FOR UPDATE OF" in sql, sql
