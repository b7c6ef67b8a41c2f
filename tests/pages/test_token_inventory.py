"""Auditors read the API-token inventory (page and API) but can neither create nor revoke."""

import pytest
from django.urls import reverse

from swrly.audit.models import AuditEvent
from tenants.models import ApiToken, Role

pytestmark = pytest.mark.django_db


def test_an_auditor_sees_the_inventory_without_controls_or_secrets(acme):
    response = acme.client(Role.AUDITOR).get(reverse("tenants:apitoken-list", args=["acme"]))
    assert response.status_code == 200
    body = response.content.decode()
    for role in Role:
        token = acme.token(role)
        assert token.name in body
        assert token.display_prefix in body
        assert token.digest not in body
        assert acme.tokens[role] not in body
    assert "by owner@acme.example" in body
    assert "Create an API token" not in body
    assert "Revoke…" not in body
    assert "<form" not in body.split("<main", 1)[-1].split("</main>", 1)[0]
    assert "Read-only" in body


def test_an_owner_still_gets_the_controls(acme):
    body = acme.client(Role.OWNER).get(reverse("tenants:apitoken-list", args=["acme"]))
    body = body.content.decode()
    assert "Create an API token" in body
    token = acme.token(Role.DEVELOPER)
    # a link to the revoke confirmation (which then posts), not a form that revokes at once
    revoke = reverse("tenants:apitoken-revoke", args=["acme", token.pk])
    assert f'<a class="button danger" href="{revoke}">Revoke…</a>' in body


def test_an_auditor_cannot_create_a_token_and_the_refusal_is_audited(acme):
    before = ApiToken.objects.filter(tenant=acme.tenant).count()
    url = reverse("tenants:apitoken-list", args=["acme"])
    response = acme.client(Role.AUDITOR).post(url, {"name": "sneaky", "role": "auditor"})
    assert response.status_code == 403
    assert ApiToken.objects.filter(tenant=acme.tenant).count() == before
    denied = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").last()
    assert denied.metadata["reason"] == "role auditor not allowed"
    assert denied.actor == f"user:{acme.users[Role.AUDITOR].username}"


def test_an_auditor_cannot_revoke_a_token(acme):
    token = acme.token(Role.OWNER)
    url = reverse("tenants:apitoken-revoke", args=["acme", token.pk])
    response = acme.client(Role.AUDITOR).post(url)
    assert response.status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None
    assert AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").exists()


def test_a_developer_still_gets_403(acme):
    url = reverse("tenants:apitoken-list", args=["acme"])
    assert acme.client(Role.DEVELOPER).get(url).status_code == 403


def test_the_api_lists_tokens_to_an_auditor_without_secrets(acme):
    response = acme.api(Role.AUDITOR).get("/api/v1/tokens/")
    assert response.status_code == 200
    results = response.json()["results"]
    assert {r["name"] for r in results} == {f"{role}-token" for role in Role}
    text = response.content.decode()
    for role in Role:
        assert acme.tokens[role] not in text
        assert acme.token(role).digest not in text
    assert all("secret" not in r and "digest" not in r for r in results)
    refused = acme.api(Role.AUDITOR).post(
        "/api/v1/tokens/", {"name": "x", "role": "auditor"}, "application/json"
    )
    assert refused.status_code == 403
