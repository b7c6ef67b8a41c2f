"""The audit log over the API: filters, chain status, streamed export, and run timelines."""

import json

from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor, audit_record
from tenants.models import Role


def test_audit_events_filter_like_the_page(acme):
    audit_record(tenant=acme.tenant, action="key.consumed", actor=Actor.system("w"), target="run:1")
    audit_record(
        tenant=acme.tenant, action="key.deposited", actor=Actor.system("w"), target="run:2"
    )
    api = acme.api(Role.AUDITOR)
    exact = api.get("/api/v1/audit-events/?action=key.consumed").json()["results"]
    assert [e["action"] for e in exact] == ["key.consumed"]
    group = api.get("/api/v1/audit-events/?action=key.*").json()["results"]
    assert {e["action"] for e in group} == {"key.consumed", "key.deposited"}
    by_target = api.get("/api/v1/audit-events/?target=run:2").json()["results"]
    assert [e["target"] for e in by_target] == ["run:2"]
    bad = api.get("/api/v1/audit-events/?action=DROP TABLE")
    assert bad.status_code == 400
    assert "action" in bad.json()["error"]["fields"]


def test_developers_cannot_read_the_audit_log(acme):
    assert acme.api(Role.DEVELOPER).get("/api/v1/audit-events/").status_code == 403
    assert acme.api(Role.DEVELOPER).get("/api/v1/audit-events/export/").status_code == 403


def test_verify_reports_the_chain(acme):
    body = acme.api(Role.AUDITOR).get("/api/v1/audit-events/verify/").json()
    assert body["ok"] is True
    assert body["checked"] == AuditEvent.objects.filter(tenant=acme.tenant).count()
    assert body["broken_seq"] is None


def test_export_streams_the_filtered_events_and_is_audited(acme):
    response = acme.api(Role.ADMIN).get("/api/v1/audit-events/export/?action=token.*")
    assert response.status_code == 200
    assert response.streaming
    rows = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert rows
    assert {row["action"] for row in rows} == {"token.created"}
    assert [row["seq"] for row in rows] == sorted(row["seq"] for row in rows)
    exported = AuditEvent.objects.get(tenant=acme.tenant, action="audit.exported")
    assert exported.metadata["filters"] == {"action": "token.*"}
    assert exported.metadata["via"] == "api"
