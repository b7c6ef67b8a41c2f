"""Tokens and members over the API, for owners and admins."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from swrly.audit.models import AuditEvent
from tenants.models import ApiToken, Membership, Role


def test_a_token_created_over_the_api_is_shown_once_and_works(acme):
    response = acme.api(Role.ADMIN).post(
        "/api/v1/tokens/", {"name": "deploy", "role": "developer"}, "application/json"
    )
    assert response.status_code == 201
    body = response.json()
    secret = body["secret"]
    assert secret.startswith("swr_")
    me = Client(headers={"Authorization": f"Bearer {secret}"}).get("/api/v1/me/")
    assert me.json()["token_name"] == "deploy"
    listed = acme.api(Role.ADMIN).get(f"/api/v1/tokens/{body['id']}/").json()
    assert "secret" not in listed
    assert secret not in acme.api(Role.ADMIN).get("/api/v1/tokens/").content.decode()


def test_delete_revokes_a_token_and_keeps_it_as_history(acme):
    token = acme.token(Role.AUDITOR)
    response = acme.api(Role.OWNER).delete(f"/api/v1/tokens/{token.pk}/")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert ApiToken.objects.filter(pk=token.pk).exists()
    assert acme.api(Role.AUDITOR).get("/api/v1/me/").status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "", "role": "developer"}, "name"),
        ({"name": "x", "role": "developer", "secret": "mine"}, "secret"),
    ],
)
def test_bad_token_requests_are_refused_with_field_errors(acme, body, field):
    response = acme.api(Role.OWNER).post("/api/v1/tokens/", body, "application/json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_only_owners_create_owner_tokens(acme):
    response = acme.api(Role.ADMIN).post(
        "/api/v1/tokens/", {"name": "root", "role": "owner"}, "application/json"
    )
    assert response.status_code == 400
    assert "only an owner" in response.json()["error"]["fields"]["non_field_errors"][0]
    assert not ApiToken.objects.filter(name="root").exists()


def test_members_are_invited_changed_and_removed_over_the_api(acme):
    from swrly.identity.models import Invitation
    from swrly.identity.services import invitation_accept

    api = acme.api(Role.ADMIN)
    invited = api.post(
        "/api/v1/members/", {"email": "new@acme.example", "role": "auditor"}, "application/json"
    )
    # an invitation, not an account: no password is made or returned
    assert invited.status_code == 201
    assert invited.json()["status"] == "pending"
    assert "one_time_password" not in invited.json()
    assert not get_user_model().objects.filter(username="new@acme.example").exists()
    # the invitee accepts (tests/identity/test_invitations.py drives the link and the page)
    invitation_accept(
        invitation=Invitation.objects.get(pk=invited.json()["id"]),
        password="lantern-quiet-harbour-42",
    )
    (member,) = [
        m
        for m in api.get("/api/v1/members/").json()["results"]
        if m["role"] == "auditor" and m["email"] == "new@acme.example"
    ]
    body = {"id": member["id"]}
    changed = api.patch(f"/api/v1/members/{body['id']}/", {"role": "developer"}, "application/json")
    assert changed.json()["role"] == "developer"
    assert api.delete(f"/api/v1/members/{body['id']}/").status_code == 204
    assert not Membership.objects.filter(pk=body["id"]).exists()
    events = AuditEvent.objects.filter(target="user:new@acme.example").order_by("seq")
    actions = list(events.values_list("action", flat=True))
    assert actions == ["member.added", "member.role_changed", "member.removed"]


def test_the_last_owner_cannot_be_removed_over_the_api(acme):
    owner = Membership.objects.get(user=acme.users[Role.OWNER])
    response = acme.api(Role.OWNER).delete(f"/api/v1/members/{owner.pk}/")
    assert response.status_code == 400
    assert "last owner" in response.json()["error"]["fields"]["non_field_errors"][0]
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_members_api_is_for_owners_and_admins(acme):
    for role in (Role.DEVELOPER, Role.AUDITOR):
        assert acme.api(role).get("/api/v1/members/").status_code == 403
        response = acme.api(role).post(
            "/api/v1/members/", {"email": "x@acme.example", "role": "owner"}, "application/json"
        )
        assert response.status_code == 403
    assert not Membership.objects.filter(user__username="x@acme.example").exists()


def test_provider_keys_show_which_key_replaced_which(acme):
    from datetime import timedelta

    from django.utils import timezone

    from swrly.custody.models import ProviderKey

    now = timezone.now()
    for i, hint in enumerate(["sk-…OLD1", "sk-…NEW2"]):
        ProviderKey.objects.create(
            tenant=acme.tenant,
            provider="openai",
            fingerprint=str(i) * 64,
            hint=hint,
            first_seen_at=now + timedelta(days=i),
            last_seen_at=now + timedelta(days=i),
            use_count=3,
        )
    rows = acme.api(Role.AUDITOR).get("/api/v1/provider-keys/").json()
    assert [(r["hint"], r["replaced_by"]) for r in rows] == [
        ("sk-…OLD1", "1" * 64),
        ("sk-…NEW2", None),
    ]
