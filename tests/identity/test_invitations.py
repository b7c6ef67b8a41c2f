"""Invitations: a single-use, expiring e-mailed link replaces the one-time password."""

import socket
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from swrly.audit.models import AuditEvent
from swrly.identity.models import Invitation
from tenants.models import Membership, Role
from tests.identity.conftest import invite, last_invitation_link

STRONG = "quiet-harbour-lantern-42"


def _path(link: str) -> str:
    return link.split("://", 1)[1].split("/", 1)[1].join(["/", ""])


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    """Run on-commit callbacks (the invitation e-mail) as the request's commit would."""

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run


def test_an_admin_invites_on_the_page_and_the_link_is_emailed_once(acme, on_commit):
    # when
    response = on_commit(
        acme.client(Role.ADMIN).post,
        reverse("identity:member-add", kwargs={"tenant_slug": "acme"}),
        {"email": "New.Person@Example.com", "role": "developer"},
    )
    # then
    assert response.status_code == 302
    invitation = Invitation.objects.get(tenant=acme.tenant)
    assert (invitation.email, invitation.role) == ("new.person@example.com", Role.DEVELOPER)
    assert invitation.expires_at - invitation.created_at == timedelta(hours=72)
    link = last_invitation_link("new.person@example.com")
    secret = link.rstrip("/").rsplit("/", 1)[1]
    assert len(secret) >= 40
    # only a digest is stored, and neither the audit log nor the database holds the secret
    assert secret not in invitation.digest
    with connection.cursor() as cursor:
        cursor.execute("SELECT digest FROM identity_invitation")
        assert secret not in str(cursor.fetchall())
    event = AuditEvent.objects.get(tenant=acme.tenant, action="invitation.created")
    assert event.target == f"invitation:{invitation.pk}"
    assert event.metadata["email"] == "new.person@example.com"
    assert secret not in str(AuditEvent.objects.values_list("metadata", flat=True))
    # no account exists until the invitation is accepted
    assert not get_user_model().objects.filter(username="new.person@example.com").exists()
    listed = acme.client(Role.ADMIN).get(
        reverse("identity:invitation-list", kwargs={"tenant_slug": "acme"})
    )
    assert b"new.person@example.com" in listed.content
    assert secret.encode() not in listed.content


def test_a_new_invitee_chooses_a_password_and_is_signed_in(acme, on_commit):
    on_commit(invite, acme, "newbie@example.com", Role.AUDITOR)
    link = last_invitation_link("newbie@example.com")
    browser = Client()
    # the link moves the secret into the session and off the address bar
    opened = browser.get(_path(link))
    invitation = Invitation.objects.get(email="newbie@example.com")
    accept = reverse("invitation-accept", kwargs={"invitation_id": invitation.pk})
    assert opened.status_code == 302
    assert opened["Location"] == accept
    page = browser.get(accept)
    assert page.status_code == 200
    assert b"Join Acme" in page.content
    assert b"Auditor" in page.content
    # Django's validators refuse a weak password, and nothing is created
    weak = browser.post(accept, {"password1": "newbie123", "password2": "newbie123"})
    assert weak.status_code == 400
    assert b"too common" in weak.content or b"too similar" in weak.content
    assert not Membership.objects.filter(user__username="newbie@example.com").exists()
    # when
    joined = browser.post(accept, {"password1": STRONG, "password2": STRONG})
    # then
    assert joined.status_code == 302
    assert joined["Location"] == reverse("runs:dashboard", kwargs={"tenant_slug": "acme"})
    user = get_user_model().objects.get(username="newbie@example.com")
    assert user.check_password(STRONG)
    assert Membership.objects.get(tenant=acme.tenant, user=user).role == Role.AUDITOR
    assert browser.get(joined["Location"]).status_code == 200
    actions = list(
        AuditEvent.objects.filter(tenant=acme.tenant, target__contains="newbie")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions[-2:] == ["member.added", "auth.login"]
    accepted = AuditEvent.objects.get(tenant=acme.tenant, action="invitation.accepted")
    assert accepted.metadata["user_created"] is True
    assert accepted.actor == "user:newbie@example.com"
    # the link works once
    again = Client()
    again.get(_path(link))
    used = again.get(accept)
    assert used.status_code == 410
    assert b"already used" in used.content


def test_an_existing_user_joins_another_tenant_without_a_new_password(acme, globex, on_commit):
    auditor = acme.users[Role.AUDITOR]
    auditor.set_password(STRONG)
    auditor.save()
    on_commit(invite, globex, auditor.username, Role.DEVELOPER)
    invitation = Invitation.objects.get(tenant=globex.tenant)
    link = last_invitation_link(auditor.username)
    accept = reverse("invitation-accept", kwargs={"invitation_id": invitation.pk})
    # signed out: asked to sign in, no password form
    anonymous = Client()
    anonymous.get(_path(link))
    page = anonymous.get(accept)
    assert b"Sign in as" in page.content
    assert b"password1" not in page.content
    assert anonymous.post(accept, {}).status_code == 200
    assert not Membership.objects.filter(tenant=globex.tenant, user=auditor).exists()
    # signed in as someone else: refused
    other = globex.client(Role.ADMIN)
    other.get(_path(link))
    assert b"this invitation is for" in other.get(accept).content
    other.post(accept, {})
    assert not Membership.objects.filter(tenant=globex.tenant, user=auditor).exists()
    # signed in as the invitee: joins, password unchanged
    own = acme.client(Role.AUDITOR)
    own.get(_path(link))
    assert own.post(accept, {}).status_code == 302
    assert Membership.objects.get(tenant=globex.tenant, user=auditor).role == Role.DEVELOPER
    auditor.refresh_from_db()
    assert auditor.check_password(STRONG)
    assert AuditEvent.objects.get(tenant=globex.tenant, action="invitation.accepted").metadata == {
        "email": auditor.username,
        "role": "developer",
        "user_created": False,
    }


def test_expired_revoked_and_forged_links_get_a_clear_page(acme, on_commit):
    on_commit(invite, acme, "late@example.com")
    on_commit(invite, acme, "revoked@example.com")
    late = Invitation.objects.get(email="late@example.com")
    revoked = Invitation.objects.get(email="revoked@example.com")
    owner = acme.client(Role.OWNER)
    owner.post(
        reverse(
            "identity:invitation-revoke",
            kwargs={"tenant_slug": "acme", "invitation_id": revoked.pk},
        )
    )
    revoked.refresh_from_db()
    assert revoked.revoked_at is not None
    assert AuditEvent.objects.filter(action="invitation.revoked").count() == 1

    def visit(invitation, link):
        client = Client()
        client.get(_path(link))
        return client.get(reverse("invitation-accept", kwargs={"invitation_id": invitation.pk}))

    with time_machine.travel(timezone.now() + timedelta(hours=73)):
        expired = visit(late, last_invitation_link("late@example.com"))
    assert expired.status_code == 410
    assert b"has expired" in expired.content
    gone = visit(revoked, last_invitation_link("revoked@example.com"))
    assert gone.status_code == 410
    assert b"was revoked" in gone.content
    # a wrong secret for a real invitation, and another invitation's secret, both fail alike
    forged_link = last_invitation_link("late@example.com").rstrip("/")[:-4] + "AAAA/"
    forged = visit(late, forged_link)
    assert forged.status_code == 404
    assert b"does not work" in forged.content
    crossed = Client()
    crossed.get(_path(last_invitation_link("revoked@example.com")))
    answer = crossed.get(reverse("invitation-accept", kwargs={"invitation_id": late.pk}))
    assert answer.status_code == 404
    # and a POST to an unusable invitation creates nothing
    crossed.post(
        reverse("invitation-accept", kwargs={"invitation_id": late.pk}),
        {"password1": STRONG, "password2": STRONG},
    )
    assert not get_user_model().objects.filter(username="late@example.com").exists()


def test_only_owners_and_admins_see_and_revoke_invitations(acme):
    invitation = invite(acme, "someone@example.com")
    url = reverse("identity:invitation-list", kwargs={"tenant_slug": "acme"})
    revoke = reverse(
        "identity:invitation-revoke", kwargs={"tenant_slug": "acme", "invitation_id": invitation.pk}
    )
    for role in (Role.DEVELOPER, Role.AUDITOR):
        assert acme.client(role).get(url).status_code == 403
        assert acme.client(role).post(revoke).status_code == 403
        add = reverse("identity:member-add", kwargs={"tenant_slug": "acme"})
        assert (
            acme.client(role).post(add, {"email": "x@example.com", "role": "auditor"}).status_code
            == 403
        )
    assert acme.client(Role.ADMIN).get(url).status_code == 200
    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    assert not Invitation.objects.filter(email="x@example.com").exists()


def test_an_admin_cannot_invite_an_owner_and_duplicates_are_refused(acme):
    add = reverse("identity:member-add", kwargs={"tenant_slug": "acme"})
    refused = acme.client(Role.ADMIN).post(add, {"email": "boss@example.com", "role": "owner"})
    assert refused.status_code == 400
    assert b"owner" in refused.content
    member = acme.client(Role.OWNER).post(
        add, {"email": acme.users[Role.AUDITOR].username, "role": "auditor"}
    )
    assert b"already a member" in member.content
    acme.client(Role.OWNER).post(add, {"email": "twice@example.com", "role": "auditor"})
    twice = acme.client(Role.OWNER).post(add, {"email": "twice@example.com", "role": "auditor"})
    assert b"pending invitation" in twice.content
    assert Invitation.objects.filter(email="twice@example.com").count() == 1


def test_an_invitation_dies_with_its_inviters_authority(acme, on_commit):
    on_commit(invite, acme, "late-joiner@example.com", Role.DEVELOPER, Role.ADMIN)
    link = last_invitation_link("late-joiner@example.com")
    invitation = Invitation.objects.get(email="late-joiner@example.com")
    Membership.objects.filter(user=acme.users[Role.ADMIN]).update(role=Role.AUDITOR)
    client = Client()
    client.get(_path(link))
    accept = reverse("invitation-accept", kwargs={"invitation_id": invitation.pk})
    client.post(accept, {"password1": STRONG, "password2": STRONG})
    assert not get_user_model().objects.filter(username="late-joiner@example.com").exists()
    invitation.refresh_from_db()
    assert invitation.revoked_at is not None
    event = AuditEvent.objects.get(action="invitation.revoked")
    assert event.metadata["reason"] == "inviter_authority_lost"


def test_the_api_invites_and_never_returns_a_password_or_the_link(acme, on_commit):
    api = acme.api(Role.ADMIN)
    created = on_commit(
        api.post,
        reverse("api:member-list"),
        {"email": "api-invitee@example.com", "role": "developer"},
        "application/json",
    )
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "pending"
    assert set(body) == {
        "id",
        "email",
        "role",
        "status",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "revoked_at",
    }
    assert body["invited_by"].startswith("token:admin-token")
    secret = last_invitation_link("api-invitee@example.com").rstrip("/").rsplit("/", 1)[1]
    assert secret not in created.content.decode()
    assert "password" not in created.content.decode()
    listed = api.get(reverse("api:invitation-list")).json()["results"]
    assert [row["id"] for row in listed] == [body["id"]]
    # the same through /invitations/, and revocation
    second = api.post(
        reverse("api:invitation-list"),
        {"email": "second@example.com", "role": "auditor"},
        "application/json",
    )
    assert second.status_code == 201
    revoked = api.delete(reverse("api:invitation-detail", kwargs={"pk": second.json()["id"]}))
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    again = api.delete(reverse("api:invitation-detail", kwargs={"pk": second.json()["id"]}))
    assert again.status_code == 400
    # an admin's token cannot invite an owner
    owner = api.post(
        reverse("api:member-list"), {"email": "o@example.com", "role": "owner"}, "application/json"
    )
    assert owner.status_code == 400


def test_a_mail_server_that_refuses_leaves_the_invitation_pending_and_logs_one_line(
    acme, on_commit, settings, caplog
):
    # given a mail server address where nothing listens (a real refused connection)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    # when an owner invites through the API
    response = on_commit(
        acme.api(Role.OWNER).post,
        "/api/v1/invitations/",
        {"email": "late@example.com", "role": "developer"},
        "application/json",
    )
    # then the invitation is made and stays pending, to be revoked and sent again
    assert response.status_code == 201
    invitation = Invitation.objects.get(tenant=acme.tenant, email="late@example.com")
    assert invitation.accepted_at is None
    assert invitation.revoked_at is None
    # and the failure is one error line that names the cause, without a traceback or the link
    (record,) = [r for r in caplog.records if "could not be sent" in r.getMessage()]
    assert record.levelname == "ERROR"
    assert record.exc_info is None
    assert record.getMessage().endswith("ConnectionRefusedError")
    assert f"/invitations/{invitation.pk}/" not in caplog.text
