"""A generated password (create-tenant's first owner, the demo owner) is changed at first
sign-in; API tokens are not affected."""

import io

from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from swrly.identity.models import PasswordChangeRequired
from tenants.models import Role

NEW = "copper-kettle-meadow-19"


def test_the_first_owner_must_change_the_generated_password(db):
    out = io.StringIO()
    call_command("create-tenant", "initech", "--owner-email", "boss@initech.example", stdout=out)
    assert "must be changed at the first sign-in." in out.getvalue()
    password = out.getvalue().strip().splitlines()[-1]
    assert PasswordChangeRequired.objects.filter(user__username="boss@initech.example").exists()
    client = Client()
    signed_in = client.post(
        reverse("login"), {"username": "boss@initech.example", "password": password}
    )
    assert signed_in.status_code == 302
    # every page sends the owner to the password page until it is changed
    dashboard = reverse("runs:dashboard", kwargs={"tenant_slug": "initech"})
    sent = client.get(dashboard)
    assert sent.status_code == 302
    assert sent["Location"].startswith(reverse("password-change"))
    page = client.get(sent["Location"])
    assert b"Your password was generated for you" in page.content
    assert client.get(reverse("home")).status_code == 302
    # when
    changed = client.post(
        reverse("password-change"),
        {"old_password": password, "new_password1": NEW, "new_password2": NEW},
    )
    # then
    assert changed.status_code == 302
    assert client.get(dashboard).status_code == 200
    assert not PasswordChangeRequired.objects.exists()


def test_api_tokens_are_not_held_back_by_the_flag(acme):
    from swrly.identity.services import password_change_require

    password_change_require(user=acme.users[Role.OWNER])
    assert acme.api(Role.OWNER).get(reverse("api:me")).status_code == 200
    page = acme.client(Role.OWNER).get(reverse("runs:dashboard", kwargs={"tenant_slug": "acme"}))
    assert page.status_code == 302
    assert page["Location"].startswith(reverse("password-change"))


def test_an_existing_owner_keeps_their_password_and_gets_no_flag(acme):
    out = io.StringIO()
    call_command(
        "create-tenant", "second", "--owner-email", acme.users[Role.AUDITOR].username, stdout=out
    )
    assert "password is unchanged" in out.getvalue()
    assert not PasswordChangeRequired.objects.exists()
