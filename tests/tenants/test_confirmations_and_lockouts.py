"""Destructive actions on the members and API tokens pages ask first (a page that states the
consequence, no JavaScript needed), and owners lift sign-in lockouts of their members."""

import re

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from swrly.audit.models import AuditEvent
from tenants.models import ApiToken, Membership, Role
from tests.pages.conftest import assert_clean_html

PASSWORD = "correct horse battery staple"


def _events(tenant, action):
    return AuditEvent.objects.filter(tenant=tenant, action=action)


def test_revoking_an_api_token_asks_first_and_states_the_consequence(acme):
    token = acme.token(Role.DEVELOPER)
    client = acme.client(Role.ADMIN)
    url = reverse("tenants:apitoken-revoke", args=["acme", token.pk])
    listing = client.get(reverse("tenants:apitoken-list", args=["acme"])).content.decode()
    assert f'href="{url}"' in listing  # a link to the confirmation, not a form that acts

    confirm = client.get(url)

    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert_clean_html(html)
    assert "Revoking stops every client using this API token at once." in html
    assert "This cannot be undone" in html
    assert token.display_prefix in html
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None  # asking changes nothing
    assert not _events(acme.tenant, "token.revoked").exists()
    form = re.search(r'<form method="post" action="([^"]+)"', html)
    assert form.group(1) == url

    response = client.post(url)

    assert response.status_code == 302
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert _events(acme.tenant, "token.revoked").count() == 1
    assert acme.api(Role.DEVELOPER).get("/api/v1/me/").status_code == 401
    again = client.get(url).content.decode()
    assert "It was already revoked" in again


def test_the_revoke_confirmation_counts_the_tokens_made_with_it(acme):
    from tenants.api.authentication import ApiTokenAuthentication  # noqa: F401  (loaded app)

    parent = acme.token(Role.ADMIN)
    created = acme.api(Role.ADMIN).post(
        "/api/v1/tokens/", {"name": "child", "role": "developer"}, "application/json"
    )
    assert created.status_code == 201
    html = acme.client(Role.OWNER).get(reverse("tenants:apitoken-revoke", args=["acme", parent.pk]))
    assert "The 1 active API token created with it is revoked too" in html.content.decode()


def test_removing_a_member_asks_first_and_states_the_consequence(acme):
    member = Membership.objects.get(user=acme.users[Role.ADMIN])
    made = acme.client(Role.ADMIN).post("/t/acme/tokens/", {"name": "ci", "role": "developer"})
    assert made.status_code == 200
    client = acme.client(Role.OWNER)
    url = reverse("tenants:member-remove", args=["acme", member.pk])
    listing = client.get(reverse("tenants:member-list", args=["acme"])).content.decode()
    assert f'href="{url}"' in listing

    html = client.get(url).content.decode()

    assert_clean_html(html)
    assert f"Remove {member.user.username}?" in html
    assert "loses access to Acme at once" in html
    assert "The 1 active API token they created is revoked" in html
    assert Membership.objects.filter(pk=member.pk).exists()

    response = client.post(url)

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=member.pk).exists()
    assert _events(acme.tenant, "member.removed").count() == 1
    assert ApiToken.objects.get(name="ci").revoked_at is not None


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.AUDITOR])
def test_members_who_cannot_manage_get_no_confirmation_either(acme, role):
    member = Membership.objects.get(user=acme.users[Role.ADMIN])
    token = acme.token(Role.ADMIN)
    client = acme.client(role)
    assert client.get(reverse("tenants:member-remove", args=["acme", member.pk])).status_code == 403
    assert (
        client.get(reverse("tenants:apitoken-revoke", args=["acme", token.pk])).status_code == 403
    )


def _lock_out(user, address="203.0.113.7") -> None:
    client = Client(REMOTE_ADDR=address)
    for _ in range(5):
        client.post("/accounts/login/", {"username": user.username, "password": "wrong"})


def test_owners_see_their_locked_out_members_and_unlock_them(acme, globex):
    developer = acme.users[Role.DEVELOPER]
    developer.set_password(PASSWORD)
    developer.save()
    _lock_out(developer)
    _lock_out(globex.users[Role.DEVELOPER])  # another tenant's member: not acme's business
    locked = Client(REMOTE_ADDR="203.0.113.7").post(
        "/accounts/login/", {"username": developer.username, "password": PASSWORD}
    )
    assert locked.status_code == 429
    client = acme.client(Role.OWNER)

    page = client.get(reverse("tenants:member-list", args=["acme"])).content.decode()

    assert_clean_html(page)
    table = re.search(r'<table id="lockouts".*?</table>', page, re.S).group(0)
    assert developer.username in table
    assert "<code>203.0.113.7</code>" in table
    assert globex.users[Role.DEVELOPER].username not in page
    member = Membership.objects.get(user=developer)
    url = reverse("tenants:member-unlock", args=["acme", member.pk])
    assert f'action="{url}"' in table

    response = client.post(url)

    assert response.status_code == 302
    assert not AccessAttempt.objects.filter(username=developer.username).exists()
    assert AccessAttempt.objects.filter(username=globex.users[Role.DEVELOPER].username).exists()
    event = _events(acme.tenant, "member.unlocked").get()
    assert event.actor == f"user:{acme.users[Role.OWNER].username}"
    assert event.target == f"user:{developer.username}"
    assert event.metadata == {"addresses": ["203.0.113.7"], "cleared": 1}
    after = client.get(response["Location"]).content.decode()
    assert f"Unlocked {developer.username}: they can sign in again." in after
    assert 'id="no-lockouts"' in after
    signed_in = Client(REMOTE_ADDR="203.0.113.7").post(
        "/accounts/login/", {"username": developer.username, "password": PASSWORD}
    )
    assert signed_in.status_code == 302


def test_a_lockout_past_its_cooloff_is_not_listed(acme, settings, time_machine):
    settings.AXES_COOLOFF_TIME = 0.25
    time_machine.move_to(timezone.now(), tick=False)
    _lock_out(acme.users[Role.ADMIN])
    client = acme.client(Role.OWNER)
    assert (
        'id="lockouts"'
        in client.get(reverse("tenants:member-list", args=["acme"])).content.decode()
    )
    time_machine.shift(16 * 60)
    html = client.get(reverse("tenants:member-list", args=["acme"])).content.decode()
    assert 'id="no-lockouts"' in html


@pytest.mark.parametrize("role", [Role.ADMIN, Role.DEVELOPER, Role.AUDITOR])
def test_only_owners_see_lockouts_and_unlock(acme, role):
    _lock_out(acme.users[Role.DEVELOPER])
    member = Membership.objects.get(user=acme.users[Role.DEVELOPER])
    client = acme.client(role)
    page = client.get(reverse("tenants:member-list", args=["acme"])).content.decode()
    assert "Locked out of sign-in" not in page
    response = client.post(reverse("tenants:member-unlock", args=["acme", member.pk]))
    assert response.status_code == 403
    assert AccessAttempt.objects.filter(username=acme.users[Role.DEVELOPER].username).exists()
    assert not _events(acme.tenant, "member.unlocked").exists()


def test_unlocking_a_member_who_is_not_locked_is_recorded_and_says_so(acme):
    member = Membership.objects.get(user=acme.users[Role.AUDITOR])
    client = acme.client(Role.OWNER)
    response = client.post(reverse("tenants:member-unlock", args=["acme", member.pk]))
    assert response.status_code == 302
    assert "was not locked out." in client.get(response["Location"]).content.decode()
    assert _events(acme.tenant, "member.unlocked").get().metadata == {
        "addresses": [],
        "cleared": 0,
    }
