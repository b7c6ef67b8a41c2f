import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from swrly.audit.models import AuditEvent
from tenants.models import ApiToken, Membership, Role, Tenant


def _run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_tenant_prints_the_new_owners_one_time_password(db):
    out = _run(
        "create-tenant", "initech", "--name", "Initech", "--owner-email", "Boss@Initech.example"
    )
    password = out.strip().splitlines()[-1]
    user = get_user_model().objects.get(username="boss@initech.example")
    assert user.check_password(password)
    tenant = Tenant.objects.get(slug="initech")
    assert tenant.name == "Initech"
    assert Membership.objects.get(tenant=tenant, user=user).role == Role.OWNER
    actions = set(AuditEvent.objects.filter(tenant=tenant).values_list("action", flat=True))
    assert actions == {"tenant.created", "member.added"}
    assert password not in str(list(AuditEvent.objects.values_list("metadata", flat=True)))


def test_create_tenant_for_an_existing_user_prints_no_password(acme):
    out = _run("create-tenant", "second", "--owner-email", acme.users[Role.AUDITOR].username)
    assert "password is unchanged" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["acme", "--owner-email", "a@b.example"], "already exists"),
        (["Bad Slug!", "--owner-email", "a@b.example"], "slug"),
        (["fine", "--owner-email", "not-an-email"], "email"),
    ],
)
def test_create_tenant_refuses_bad_input(acme, args, message):
    with pytest.raises(CommandError, match=message):
        _run("create-tenant", *args)


def test_create_api_token_prints_the_secret_last(acme):
    out = _run("create-api-token", "acme", "--name", "deploy", "--role", "developer")
    secret = out.splitlines()[-1]
    assert secret.startswith("swr_")
    token = ApiToken.objects.get(name="deploy")
    assert token.tenant == acme.tenant
    assert secret not in (token.digest + token.prefix)
    response = Client(headers={"Authorization": f"Bearer {secret}"}).get("/api/v1/me/")
    assert response.json()["token_name"] == "deploy"


def test_create_api_token_for_an_unknown_tenant_fails(db):
    with pytest.raises(CommandError, match="no tenant"):
        _run("create-api-token", "ghost", "--name", "x", "--role", "owner")


def test_verify_audit_passes_on_intact_chains(acme, globex):
    out = _run("verify-audit")
    assert "ok      acme:" in out
    assert "ok      globex:" in out
    assert "BROKEN" not in out
