import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from swrly.audit.models import AuditEvent
from swrly.identity.models import Invitation
from tenants.models import ApiToken, Membership, Role


def _events(tenant, action):
    return AuditEvent.objects.filter(tenant=tenant, action=action)


def test_login_page_is_served_with_security_headers(client, db):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_login_and_logout_are_audited(acme):
    owner = acme.users[Role.OWNER]
    owner.set_password("correct horse battery staple")
    owner.save()
    client = Client()
    response = client.post(
        "/accounts/login/",
        {"username": owner.username, "password": "correct horse battery staple"},
    )
    assert response.status_code == 302
    assert _events(acme.tenant, "auth.login").filter(actor=f"user:{owner.username}").exists()
    assert client.get("/").status_code == 302  # one tenant: straight to it
    assert client.post("/accounts/logout/").status_code == 302
    assert _events(acme.tenant, "auth.logout").filter(actor=f"user:{owner.username}").exists()


def test_repeated_failures_lock_the_login_and_are_audited(acme):
    owner = acme.users[Role.OWNER]
    owner.set_password("correct horse battery staple")
    owner.save()
    client = Client()
    for _ in range(5):
        client.post("/accounts/login/", {"username": owner.username, "password": "wrong"})
    assert _events(acme.tenant, "auth.login_failed").count() >= 4
    assert _events(acme.tenant, "auth.locked_out").exists()
    # even the right password is refused now
    response = client.post(
        "/accounts/login/",
        {"username": owner.username, "password": "correct horse battery staple"},
    )
    assert response.status_code == 429
    assert not _events(acme.tenant, "auth.login").exists()


def test_failed_login_for_an_unknown_user_goes_to_the_platform_chain(db):
    # someone types their password into the username field
    Client().post("/accounts/login/", {"username": "hunter2-password", "password": "x"})
    Client().post("/accounts/login/", {"username": "hunter2-password", "password": "y"})
    first, second = AuditEvent.objects.filter(action="auth.login_failed").order_by("seq")
    assert first.tenant is None
    assert first.chain == "platform"
    assert first.metadata == {"known_user": False, "attempted_username": first.target[5:]}
    # the typed name is kept only as a keyed hash: attempts still correlate
    assert "hunter2" not in first.target + first.actor
    assert first.target == second.target
    assert first.target.startswith("user:unknown#")


def test_pages_need_a_login(acme):
    response = Client().get(reverse("runs:dashboard", args=["acme"]))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("role", list(Role))
def test_every_role_sees_the_tenant_home_and_members(acme, role):
    client = acme.client(role)
    assert client.get("/t/acme/").status_code == 200
    response = client.get("/t/acme/members/")
    assert response.status_code == 200
    assert acme.users[Role.AUDITOR].username in response.content.decode()


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.AUDITOR])
def test_members_cannot_manage_members_or_tokens(acme, role):
    client = acme.client(role)
    # auditors read the token inventory (tests/pages/test_token_inventory.py); nobody here writes
    expected = 200 if role == Role.AUDITOR else 403
    assert client.get("/t/acme/tokens/").status_code == expected
    assert client.post("/t/acme/tokens/", {"name": "x", "role": "auditor"}).status_code == 403
    assert not ApiToken.objects.filter(tenant=acme.tenant, name="x").exists()
    response = client.post("/t/acme/members/add/", {"email": "x@example.com", "role": "owner"})
    assert response.status_code == 403
    assert not Membership.objects.filter(user__username="x@example.com").exists()
    assert _events(acme.tenant, "access.denied").exists()


def test_admin_adds_a_new_member_by_invitation_not_a_password(acme):
    # tests/identity/test_invitations.py follows the e-mailed link to the new account
    client = acme.client(Role.ADMIN)
    response = client.post(
        "/t/acme/members/add/",
        {"email": "New.Person@Example.com", "role": "developer"},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Invitation sent to new.person@example.com" in page
    assert "one-time password" not in page
    assert '<code class="copy">' not in page
    assert not get_user_model().objects.filter(username="new.person@example.com").exists()
    assert (
        not _events(acme.tenant, "member.added")
        .filter(target="user:new.person@example.com")
        .exists()
    )
    assert _events(acme.tenant, "invitation.created").count() == 1


def test_adding_an_existing_member_twice_is_refused(acme):
    client = acme.client(Role.OWNER)
    response = client.post(
        "/t/acme/members/add/", {"email": acme.users[Role.AUDITOR].username, "role": "admin"}
    )
    assert response.status_code == 400
    assert "already a member" in response.content.decode()
    assert Membership.objects.get(user=acme.users[Role.AUDITOR]).role == Role.AUDITOR


def test_bad_email_is_refused_with_a_message(acme):
    response = acme.client(Role.OWNER).post("/t/acme/members/add/", {"email": "nope", "role": "x"})
    assert response.status_code == 400
    assert "Enter a valid email address" in response.content.decode()


def test_only_an_owner_grants_or_takes_away_the_owner_role(acme):
    admin = acme.client(Role.ADMIN)
    developer = Membership.objects.get(user=acme.users[Role.DEVELOPER])
    owner = Membership.objects.get(user=acme.users[Role.OWNER])
    admin.post(f"/t/acme/members/{developer.pk}/role/", {"role": "owner"})
    admin.post("/t/acme/members/add/", {"email": "boss@example.com", "role": "owner"})
    admin.post("/t/acme/tokens/", {"name": "root", "role": "owner"})
    developer.refresh_from_db()
    assert developer.role == Role.DEVELOPER
    assert not Membership.objects.filter(user__username="boss@example.com").exists()
    assert not Invitation.objects.filter(email="boss@example.com").exists()
    assert not ApiToken.objects.filter(name="root").exists()
    # and an admin can't remove an owner either, even when another owner remains
    acme.client(Role.OWNER).post(f"/t/acme/members/{developer.pk}/role/", {"role": "owner"})
    response = admin.post(f"/t/acme/members/{owner.pk}/remove/", follow=True)
    assert "Only an owner" in response.content.decode()
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_developers_do_not_see_the_audit_trail_on_the_home_page(acme):
    assert "Recent activity" not in acme.client(Role.DEVELOPER).get("/t/acme/").content.decode()
    assert "Recent activity" in acme.client(Role.AUDITOR).get("/t/acme/").content.decode()


def test_password_change_is_audited(acme):
    user = acme.users[Role.AUDITOR]
    user.set_password("one-time-password-123")
    user.save()
    client = acme.client(Role.AUDITOR)
    response = client.post(
        "/accounts/password/",
        {
            "old_password": "one-time-password-123",
            "new_password1": "a much better passphrase 42",
            "new_password2": "a much better passphrase 42",
        },
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("a much better passphrase 42")
    assert _events(acme.tenant, "auth.password_changed").count() == 1


def test_owner_changes_a_role_and_it_is_audited(acme):
    membership = Membership.objects.get(user=acme.users[Role.DEVELOPER])
    response = acme.client(Role.OWNER).post(
        f"/t/acme/members/{membership.pk}/role/", {"role": "auditor"}
    )
    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.role == Role.AUDITOR
    event = _events(acme.tenant, "member.role_changed").get()
    assert event.metadata == {"from": "developer", "to": "auditor"}


def test_the_last_owner_can_neither_leave_nor_be_demoted(acme):
    owner = Membership.objects.get(user=acme.users[Role.OWNER])
    client = acme.client(Role.OWNER)
    client.post(f"/t/acme/members/{owner.pk}/role/", {"role": "admin"})
    client.post(f"/t/acme/members/{owner.pk}/remove/")
    owner.refresh_from_db()
    assert owner.role == Role.OWNER
    response = client.get("/t/acme/members/")
    assert "last owner" in response.content.decode()


def test_an_owner_can_be_removed_when_another_remains(acme):
    admin = Membership.objects.get(user=acme.users[Role.ADMIN])
    client = acme.client(Role.OWNER)
    client.post(f"/t/acme/members/{admin.pk}/role/", {"role": "owner"})
    owner = Membership.objects.get(user=acme.users[Role.OWNER])
    assert client.post(f"/t/acme/members/{owner.pk}/remove/").status_code == 302
    assert not Membership.objects.filter(pk=owner.pk).exists()
    assert _events(acme.tenant, "member.removed").exists()


def test_token_created_on_the_page_is_shown_once_and_works(acme):
    client = acme.client(Role.OWNER)
    response = client.post("/t/acme/tokens/", {"name": "ci", "role": "developer"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = re.search(r'<code class="copy">(swr_[^<]+)</code>', response.content.decode()).group(1)
    assert secret not in client.get("/t/acme/tokens/").content.decode()
    me = Client(headers={"Authorization": f"Bearer {secret}"}).get("/api/v1/me/")
    assert me.json() == {"tenant": "acme", "token_name": "ci", "role": "developer"}
    assert _events(acme.tenant, "token.created").filter(metadata__name="ci").exists()


def test_token_revoked_on_the_page_stops_working(acme):
    token = acme.token(Role.DEVELOPER)
    response = acme.client(Role.ADMIN).post(f"/t/acme/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert acme.api(Role.DEVELOPER).get("/api/v1/me/").status_code == 401
    assert _events(acme.tenant, "token.revoked").count() == 1


def test_forms_need_a_csrf_token(acme):
    client = Client(enforce_csrf_checks=True)
    client.force_login(acme.users[Role.OWNER])
    response = client.post("/t/acme/tokens/", {"name": "x", "role": "owner"})
    assert response.status_code == 403
    assert not ApiToken.objects.filter(name="x").exists()


def test_the_lockout_page_says_how_long_and_links_back_to_sign_in(acme, settings):
    settings.AXES_COOLOFF_TIME = 0.25  # hours, as the default AXES_COOLOFF_HOURS
    owner = acme.users[Role.OWNER]
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        response = client.post("/accounts/login/", {"username": owner.username, "password": "x"})
    assert response.status_code == 429
    body = response.content.decode()
    assert "paused for 15 minutes after the last failed attempt" in body
    assert f'href="{reverse("login")}"' in body
    assert "Back to sign-in" in body


def test_the_lockout_page_follows_the_cooloff_setting(acme, settings):
    settings.AXES_COOLOFF_TIME = 2  # an int is hours for axes
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        response = client.post("/accounts/login/", {"username": "someone", "password": "x"})
    assert response.status_code == 429
    assert "paused for 120 minutes" in response.content.decode()


def test_a_failed_sign_in_names_the_attempt_not_the_victim_as_actor(acme):
    owner = acme.users[Role.OWNER]
    Client(REMOTE_ADDR="203.0.113.9").post(
        "/accounts/login/", {"username": owner.username, "password": "s3cret-guess"}
    )
    event = _events(acme.tenant, "auth.login_failed").get()
    assert event.actor == "anonymous"
    assert event.ip == "203.0.113.9"
    assert event.target == f"user:{owner.username}"
    assert event.metadata == {"known_user": True, "attempted_username": owner.username}
    assert "s3cret-guess" not in str(event.metadata) + event.target + event.actor
