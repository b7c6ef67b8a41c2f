"""Nobody outside a tenant can grow its audit chain without bound (audit_record_bounded)."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from swrly.audit.models import AuditEvent, AuditSuppression
from swrly.audit.verifier import audit_verify_chain
from swrly.audit.writer import audit_flush_suppressed, chain_for
from tenants.models import Role

BOUNDED = ("auth.login_failed", "auth.locked_out", "access.denied")


def _chain_events(tenant, *actions):
    events = AuditEvent.objects.filter(tenant=tenant)
    return events.filter(action__in=actions) if actions else events


def _attempts(n, client, username, **extra):
    for i in range(n):
        client.post("/accounts/login/", {"username": username, "password": f"wrong-{i}"}, **extra)


@pytest.fixture
def flood_settings(settings):
    settings.AUDIT_FLOOD_WINDOW = 300
    settings.AUDIT_FLOOD_PER_SOURCE = 5
    settings.AUDIT_FLOOD_PER_CHAIN = 30
    return settings


def test_a_thousand_failed_sign_ins_write_a_bounded_number_of_events(acme, flood_settings):
    # given: one client naming a member, 1,000 times, within one window
    owner = acme.users[Role.OWNER]
    before = _chain_events(acme.tenant).count()
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        _attempts(1000, Client(), owner.username)
        written = _chain_events(acme.tenant).count() - before
        # then: at most AUDIT_FLOOD_PER_SOURCE events per bounded action from that source
        assert written <= 5 * len(BOUNDED)
        assert _chain_events(acme.tenant, "auth.login_failed").count() == 5
    # when the window has closed, one summary says how many were held back
    with time_machine.travel(start + timedelta(seconds=600), tick=False):
        assert audit_flush_suppressed() >= 1
    summaries = {
        e.metadata["action"]: e.metadata for e in _chain_events(acme.tenant, "audit.suppressed")
    }
    failed = summaries["auth.login_failed"]
    assert failed["attempts"] == 1000
    assert failed["recorded"] == 5
    assert failed["suppressed"] == 995
    assert failed["sources"] == 1
    assert failed["top_sources"][0]["attempts"] == 1000
    assert failed["top_sources"][0]["source"] == "anonymous|127.0.0.1"
    assert not AuditSuppression.objects.exists()
    # 5 auth.login_failed + 5 auth.locked_out + one summary of each (1,996 without the bound)
    assert _chain_events(acme.tenant).count() - before == 12
    assert audit_verify_chain(chain_for(acme.tenant)).ok


def test_many_sources_are_bounded_by_the_chain_cap(acme, flood_settings):
    # given: 200 addresses, each trying a member's name a few times (a botnet)
    owner = acme.users[Role.OWNER]
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        for i in range(200):
            _attempts(
                2,
                Client(),
                owner.username,
                REMOTE_ADDR=f"10.9.{i // 250}.{i % 250}",
            )
        assert _chain_events(acme.tenant, "auth.login_failed").count() == 30
    # the next write after the window flushes the summary by itself (no beat needed)
    with time_machine.travel(start + timedelta(seconds=301), tick=False):
        _attempts(1, Client(), owner.username)
    summary = _chain_events(acme.tenant, "audit.suppressed").get()
    assert summary.metadata["attempts"] == 400
    assert summary.metadata["suppressed"] == 370
    assert summary.metadata["sources"] == 200
    assert len(summary.metadata["top_sources"]) == 5
    assert summary.actor == "system:audit-flood-bound"
    assert _chain_events(acme.tenant, "auth.login_failed").count() == 31


def test_an_outsider_cannot_flood_a_tenant_with_denied_accesses(acme, globex, flood_settings):
    outsider = globex.client(Role.OWNER)
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        for _ in range(100):
            assert outsider.get(f"/t/{acme.tenant.slug}/").status_code == 404
        assert _chain_events(acme.tenant, "access.denied").count() == 5
    with time_machine.travel(start + timedelta(seconds=600), tick=False):
        audit_flush_suppressed()
    summary = _chain_events(acme.tenant, "audit.suppressed").get()
    assert summary.metadata["action"] == "access.denied"
    assert summary.metadata["suppressed"] == 95
    assert summary.metadata["top_sources"][0]["source"].startswith(
        f"user:{globex.users[Role.OWNER].username}|"
    )
    assert audit_verify_chain(chain_for(acme.tenant)).ok


def test_a_new_window_records_again(acme, flood_settings):
    owner = acme.users[Role.OWNER]
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    for minutes in (0, 6, 12):
        with time_machine.travel(start + timedelta(minutes=minutes), tick=False):
            _attempts(3, Client(REMOTE_ADDR=f"10.0.0.{minutes}"), owner.username)
    # fewer than the per-source limit in each window: every attempt is its own event
    assert _chain_events(acme.tenant, "auth.login_failed").count() == 9
    assert not _chain_events(acme.tenant, "audit.suppressed").exists()
