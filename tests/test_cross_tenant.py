"""Every tenant-scoped page and API route, visited from another tenant.

`test_every_route_has_a_cross_tenant_case` walks the URLconf: a new route without a case here
fails the suite.
"""

import json
import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from runs.models import Run, Workflow
from swrly.audit.models import AuditEvent, AuditWebhook
from swrly.custody.models import BlockedKey
from swrly.identity.models import Invitation, TenantMfaPolicy
from tenants.models import ApiToken, Membership, Role
from tenants.policy import POLICY_FIELDS

# Routes that belong to no tenant. api:audit-keys serves the public checkpoint-signing keys,
# the same for everyone (tests/audit/test_audit_checkpoints.py checks it holds no tenant data).
# metrics: platform-wide Prometheus figures behind METRICS_TOKEN, with no tenant label
# (tests/test_metrics.py checks the output names no tenant, run or key).
# mfa-verify, mfa-setup: the signed-in (or half signed-in) user's own second factor, of no tenant.
# invitation-open, invitation-accept: reached with the invitation's secret, not a membership
# (tests/identity/test_invitations.py checks a link opens one invitation and nothing else).
UNSCOPED = {
    "home",
    "login",
    "mfa-verify",
    "mfa-setup",
    "invitation-open",
    "invitation-accept",
    "logout",
    "password-change",
    "api:schema",
    "api:schema-json",
    "api:docs",
    "api:audit-keys",
    "metrics",
    "favicon",
}


def _route_names(patterns=None, namespace=""):
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.app_name == "admin":
                continue
            ns = pattern.namespace or ""
            yield from _route_names(pattern.url_patterns, f"{namespace}{ns}:" if ns else namespace)
        elif isinstance(pattern, URLPattern) and pattern.name:
            yield f"{namespace}{pattern.name}"


def _page(response):
    """Status and body, without the per-render CSRF mask."""
    body = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content)
    return response.status_code, body


def _acme_member(world):
    return {"membership_id": Membership.objects.get(user=world.users[Role.DEVELOPER]).pk}


def _acme_token(world):
    return {"token_id": world.token(Role.DEVELOPER).pk}


def _acme_run_page(world):
    return {"run_id": world.run().pk}


def _acme_run_value(world):
    return {"run_id": world.run().pk, "part": "input"}


def _acme_invitation(world):
    from tests.identity.conftest import invite

    return {"invitation_id": invite(world, "invitee@elsewhere.example").pk}


def _acme_workflow_page(world):
    return {"workflow_id": world.workflow().pk}


def _acme_webhook(world):
    return {"webhook_id": world.audit_webhook().pk}


def _acme_blocked_key(world):
    blocked = BlockedKey.objects.create(
        tenant=world.tenant, provider="sandbox", fingerprint="v2:" + "b" * 64, created_by="t"
    )
    return {"blocked_key_id": blocked.pk}


BLOCK = {"provider": "sandbox", "fingerprint": "v2:" + "c" * 64, "reason": "intrusion"}


TRIGGER = {
    "idempotency_key": "page-cross-tenant-0123456789",
    "key_sandbox": "sk-sandbox-intruder-0123456789",
    "input": "{}",
}


# name -> (method, kwargs for an acme object, form data)
PAGE_CASES = {
    "tenants:audit-webhook-list": ("get", None, None),
    "tenants:audit-webhook-add": ("post", None, {"url": "https://intruder.example/x"}),
    "tenants:audit-webhook-delete": ("post", _acme_webhook, {}),
    "runs:dashboard": ("get", None, None),
    "tenants:member-list": ("get", None, None),
    "identity:member-add": ("post", None, {"email": "intruder@example.com", "role": "owner"}),
    "identity:invitation-list": ("get", None, None),
    "identity:invitation-revoke": ("post", _acme_invitation, {}),
    "identity:mfa-policy": ("post", None, {"required_roles": ["owner"]}),
    "tenants:member-role": ("post", _acme_member, {"role": "auditor"}),
    "tenants:member-remove": ("post", _acme_member, {}),
    "tenants:apitoken-list": ("get", None, None),
    "tenants:apitoken-revoke": ("post", _acme_token, {}),
    "custody:key-history": ("get", None, None),
    "custody:blocked-key-add": ("post", None, BLOCK),
    "custody:blocked-key-remove": ("post", _acme_blocked_key, {}),
    "tenants:audit-list": ("get", None, None),
    "tenants:audit-export-csv": ("get", None, None),
    "tenants:audit-export-jsonl": ("get", None, None),
    "runs:run-list": ("get", None, None),
    "runs:run-detail": ("get", _acme_run_page, None),
    "runs:run-value": ("get", _acme_run_value, None),
    "evidence:bundle": ("get", None, {"from": "2026-01-01", "to": "2026-01-31"}),
    "evidence:verifier": ("get", None, None),
    "runs:run-trigger": ("post", _acme_workflow_page, TRIGGER),
    "runs:run-cancel": ("post", _acme_run_page, {}),
    "tenants:member-unlock": ("post", _acme_member, {}),
    "tenants:tenant-settings": ("post", None, {"providers_mode": "only", "retention_days": "1"}),
    "runs:workflow-list": ("get", None, None),
    "runs:workflow-create": (
        "post",
        None,
        {
            "name": "intruder",
            "steps-count": "1",
            "steps-0-name": "x",
            "steps-0-provider": "sandbox",
            "steps-0-model": "m",
            "steps-0-prompt": "p",
        },
    ),
    "runs:workflow-detail": ("get", _acme_workflow_page, None),
    "runs:workflow-edit": ("post", _acme_workflow_page, {"name": "intruder", "steps-count": "0"}),
    "runs:workflow-duplicate": ("get", _acme_workflow_page, None),
    "runs:workflow-delete": ("post", _acme_workflow_page, {}),
    "runs:workflow-preview": ("post", _acme_workflow_page, {"input": "{}"}),
}


# name -> kwargs for an acme object (None: the route has no object id; the token picks the tenant)
def _acme_workflow(world):
    return {"pk": world.workflow().pk}


def _acme_run(world):
    return {"pk": world.run().pk}


API_CASES = {
    "api:me": None,
    "api:token-list": None,
    "api:token-detail": lambda world: {"pk": world.token(Role.DEVELOPER).pk},
    "api:workflow-list": None,
    "api:workflow-detail": _acme_workflow,
    "api:run-list": None,
    "api:run-detail": _acme_run,
    "api:run-cancel": _acme_run,
    "api:member-list": None,
    "api:member-detail": lambda world: {"pk": _acme_member(world)["membership_id"]},
    "api:provider-key-list": None,
    "api:provider-key-salt": None,
    "api:blocked-key-list": None,
    "api:blocked-key-from-key": None,
    "api:blocked-key-detail": lambda world: {"pk": _acme_blocked_key(world)["blocked_key_id"]},
    "api:key-rotation-list": None,
    "api:audit-event-list": None,
    "api:audit-event-verify": None,
    "api:audit-event-export": None,
    "api:run-timeline": _acme_run,
    "api:audit-webhook-list": None,
    "api:audit-webhook-detail": lambda world: {"pk": world.audit_webhook().pk},
    "api:evidence-list": None,
    "api:policy": None,
    "api:invitation-list": None,
    "api:invitation-detail": lambda world: {"pk": _acme_invitation(world)["invitation_id"]},
    "api:mfa-policy": None,
}
# Routes whose cross-tenant request is a write: method and body.
API_WRITES = {
    "api:run-cancel": ("post", {}),
    "api:blocked-key-detail": ("delete", None),
    "api:invitation-detail": ("delete", None),
}


def test_every_route_has_a_cross_tenant_case():
    scoped = set(_route_names()) - UNSCOPED
    missing = scoped - set(PAGE_CASES) - set(API_CASES)
    assert not missing, f"routes without a cross-tenant test: {sorted(missing)}"
    assert not (set(PAGE_CASES) | set(API_CASES)) - scoped, "cases for routes that do not exist"


def _acme_state(acme):
    acme.tenant.refresh_from_db()
    from axes.models import AccessAttempt

    return (
        [getattr(acme.tenant, name) for name in POLICY_FIELDS],
        sorted(Membership.objects.filter(tenant=acme.tenant).values_list("user_id", "role")),
        sorted(ApiToken.objects.filter(tenant=acme.tenant).values_list("pk", "revoked_at")),
        sorted(AuditWebhook.objects.filter(tenant=acme.tenant).values_list("pk", "url")),
        sorted(BlockedKey.objects.filter(tenant=acme.tenant).values_list("pk", flat=True)),
        sorted(Run.objects.filter(tenant=acme.tenant).values_list("pk", "status")),
        sorted(AccessAttempt.objects.values_list("username", "failures_since_start")),
        sorted(
            Invitation.objects.filter(tenant=acme.tenant).values_list("pk", "email", "revoked_at")
        ),
        list(TenantMfaPolicy.objects.filter(tenant=acme.tenant).values_list("required_roles")),
        sorted(Workflow.objects.filter(tenant=acme.tenant).values_list("pk", "name", "updated_at")),
    )


@pytest.mark.parametrize("name", sorted(PAGE_CASES))
def test_a_non_member_gets_404_and_is_audited(name, acme, globex):
    method, make_kwargs, data = PAGE_CASES[name]
    kwargs = {"tenant_slug": "acme", **(make_kwargs(acme) if make_kwargs else {})}
    before = _acme_state(acme)
    outsider = globex.client(Role.OWNER)

    response = getattr(outsider, method)(reverse(name, kwargs=kwargs), data)

    assert response.status_code == 404
    assert _acme_state(acme) == before
    denied = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").last()
    assert denied is not None
    assert denied.actor == f"user:{globex.users[Role.OWNER].username}"
    # the same answer as for a tenant that does not exist
    kwargs["tenant_slug"] = "no-such-tenant"
    unknown = getattr(outsider, method)(reverse(name, kwargs=kwargs), data)
    assert _page(unknown) == _page(response)


@pytest.mark.parametrize("name", sorted(n for n, case in PAGE_CASES.items() if case[1]))
def test_another_tenants_object_id_gets_404_like_an_unknown_id(name, acme, globex):
    method, make_kwargs, data = PAGE_CASES[name]
    foreign = {"tenant_slug": "globex", **make_kwargs(acme)}
    before = _acme_state(acme)
    owner = globex.client(Role.OWNER)

    response = getattr(owner, method)(reverse(name, kwargs=foreign), data)

    assert response.status_code == 404
    assert _acme_state(acme) == before
    assert AuditEvent.objects.filter(tenant=globex.tenant, action="access.denied").exists()
    unknown = {key: uuid.uuid4() if key != "tenant_slug" else "globex" for key in foreign}
    other = getattr(owner, method)(reverse(name, kwargs=unknown), data)
    assert _page(other) == _page(response)


def test_api_me_answers_for_the_tokens_own_tenant(acme, globex):
    assert globex.api(Role.AUDITOR).get(reverse("api:me")).json()["tenant"] == "globex"


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_api_another_tenants_workflow_cannot_be_changed(method, acme, globex):
    workflow = acme.workflow()
    url = reverse("api:workflow-detail", kwargs={"pk": workflow.pk})
    response = getattr(globex.api(Role.OWNER), method)(url, {"name": "x"}, "application/json")
    assert response.status_code == 404
    workflow.refresh_from_db()
    assert workflow.name != "x"


@pytest.mark.parametrize("name", ["api:workflow-list", "api:run-list"])
def test_api_lists_show_only_the_tokens_tenant(name, acme, globex):
    acme.run(), globex.run()
    body = globex.api(Role.AUDITOR).get(reverse(name)).json()
    assert len(body["results"]) == 1
    model = Workflow if name == "api:workflow-list" else Run
    assert body["results"][0]["id"] == str(model.objects.get(tenant=globex.tenant).pk)


def test_api_a_run_cannot_use_another_tenants_workflow(acme, globex):
    response = globex.api(Role.OWNER).post(
        reverse("api:run-list"),
        {
            "workflow": str(acme.workflow().pk),
            "input": {},
            "provider_keys": {"sandbox": "sk-test-1234567890"},
        },
        "application/json",
    )
    assert response.status_code == 404
    assert not Run.objects.exists()


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_api_another_tenants_member_cannot_be_changed(method, acme, globex):
    member = Membership.objects.get(user=acme.users[Role.DEVELOPER])
    url = reverse("api:member-detail", kwargs={"pk": member.pk})
    response = getattr(globex.api(Role.OWNER), method)(url, {"role": "owner"}, "application/json")
    assert response.status_code == 404
    member.refresh_from_db()
    assert member.role == Role.DEVELOPER


def test_api_another_tenants_token_cannot_be_revoked(acme, globex):
    token = acme.token(Role.DEVELOPER)
    response = globex.api(Role.OWNER).delete(reverse("api:token-detail", kwargs={"pk": token.pk}))
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_api_provider_keys_and_rotation_counts_are_the_tokens_tenants(acme, globex):
    from django.utils import timezone

    from swrly.custody.models import KeyRotation, KeyRotationTenant, ProviderKey

    now = timezone.now()
    ProviderKey.objects.create(
        tenant=acme.tenant,
        provider="openai",
        fingerprint="a" * 64,
        hint="sk-…aaaa",
        first_seen_at=now,
        last_seen_at=now,
        use_count=1,
    )
    rotation = KeyRotation.objects.create(started_at=now, actor="system:t", to_key_id="k")
    KeyRotationTenant.objects.create(rotation=rotation, tenant=acme.tenant, rewrapped=7)
    assert globex.api(Role.AUDITOR).get(reverse("api:provider-key-list")).json() == []
    (row,) = globex.api(Role.AUDITOR).get(reverse("api:key-rotation-list")).json()
    assert row["rewrapped_in_tenant"] == 0
    (row,) = acme.api(Role.AUDITOR).get(reverse("api:key-rotation-list")).json()
    assert row["rewrapped_in_tenant"] == 7


def test_api_audit_events_verify_and_export_are_the_tokens_tenants(acme, globex):
    acme_seqs = set(AuditEvent.objects.filter(tenant=acme.tenant).values_list("hash", flat=True))
    listed = globex.api(Role.AUDITOR).get(reverse("api:audit-event-list") + "?page_size=200")
    hashes = {row["hash"] for row in listed.json()["results"]}
    assert hashes
    assert not hashes & acme_seqs
    verify = globex.api(Role.AUDITOR).get(reverse("api:audit-event-verify")).json()
    assert verify["checked"] == AuditEvent.objects.filter(tenant=globex.tenant).count()
    export = globex.api(Role.AUDITOR).get(reverse("api:audit-event-export"))
    exported = {
        json.loads(line)["hash"] for line in b"".join(export.streaming_content).splitlines()
    }
    assert exported
    assert not exported & acme_seqs


def test_api_evidence_is_the_tokens_tenants(acme, globex):
    import io
    import zipfile

    from django.utils import timezone

    acme_hashes = set(AuditEvent.objects.filter(tenant=acme.tenant).values_list("hash", flat=True))
    day = timezone.now().date().isoformat()
    response = globex.api(Role.AUDITOR).get(reverse("api:evidence-list"), {"from": day, "to": day})
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as bundle:
        events = [json.loads(line) for line in bundle.read("events.jsonl").splitlines()]
        manifest = json.loads(bundle.read("manifest.json"))
    assert manifest["tenant"]["slug"] == "globex"
    assert events
    assert {event["chain"] for event in events} == {str(globex.tenant.pk)}
    assert not {event["hash"] for event in events} & acme_hashes
    assert not AuditEvent.objects.filter(tenant=acme.tenant, action="evidence.exported").exists()


def test_api_token_list_shows_only_the_tokens_tenant(acme, globex):
    body = globex.api(Role.OWNER).get(reverse("api:token-list")).json()
    ids = {row["id"] for row in body["results"]}
    assert ids == {
        str(pk) for pk in ApiToken.objects.filter(tenant=globex.tenant).values_list("pk", flat=True)
    }


@pytest.mark.parametrize("name", sorted(n for n, make in API_CASES.items() if make))
def test_api_another_tenants_object_id_gets_404_like_an_unknown_id(name, acme, globex):
    api = globex.api(Role.OWNER)
    method, body = API_WRITES.get(name, ("get", None))
    foreign_kwargs = API_CASES[name](acme)
    foreign = getattr(api, method)(reverse(name, kwargs=foreign_kwargs), body, "application/json")
    unknown_kwargs = {key: uuid.uuid4() for key in foreign_kwargs}
    unknown = getattr(api, method)(reverse(name, kwargs=unknown_kwargs), body, "application/json")
    assert foreign.status_code == 404
    assert (foreign.status_code, foreign.json()) == (unknown.status_code, unknown.json())
    assert AuditEvent.objects.filter(tenant=globex.tenant, action="access.denied").count() == 2


def test_api_another_tenants_webhook_cannot_be_deleted_or_listed(acme, globex):
    webhook = acme.audit_webhook()
    url = reverse("api:audit-webhook-detail", kwargs={"pk": webhook.pk})
    assert globex.api(Role.OWNER).delete(url).status_code == 404
    assert AuditWebhook.objects.filter(pk=webhook.pk).exists()
    assert globex.api(Role.OWNER).get(reverse("api:audit-webhook-list")).json() == []
    created = globex.api(Role.OWNER).post(
        reverse("api:audit-webhook-list"), {"url": "https://globex.example/x"}, "application/json"
    )
    assert created.status_code == 201
    assert AuditWebhook.objects.get(pk=created.json()["id"]).tenant == globex.tenant
    (row,) = acme.api(Role.AUDITOR).get(reverse("api:audit-webhook-list")).json()
    assert row["id"] == str(webhook.pk)


def test_api_blocked_keys_and_salt_are_the_tokens_tenants(acme, globex):
    _acme_blocked_key(acme)
    assert globex.api(Role.AUDITOR).get(reverse("api:blocked-key-list")).json() == []
    acme_salt = acme.api(Role.AUDITOR).get(reverse("api:provider-key-salt")).json()["salt"]
    globex_salt = globex.api(Role.AUDITOR).get(reverse("api:provider-key-salt")).json()["salt"]
    assert acme_salt != globex_salt
    # blocking in globex leaves acme's list alone, and the same fingerprint may be blocked twice
    created = globex.api(Role.ADMIN).post(
        reverse("api:blocked-key-list"),
        {"provider": "sandbox", "fingerprint": "v2:" + "b" * 64},
        "application/json",
    )
    assert created.status_code == 201
    assert BlockedKey.objects.filter(tenant=acme.tenant).count() == 1


def test_a_page_run_cannot_use_another_tenants_workflow(acme, globex, key_store, settings):
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
    url = reverse("runs:run-trigger", args=["globex", acme.workflow().pk])
    response = globex.client(Role.OWNER).post(url, TRIGGER)
    assert response.status_code == 404
    assert not Run.objects.exists()
    assert list(key_store.scan_iter()) == []


def test_an_owner_cannot_see_or_lift_another_tenants_lockout(acme, globex):
    from axes.models import AccessAttempt
    from django.test import Client

    victim = acme.users[Role.DEVELOPER]
    for _ in range(5):
        Client().post("/accounts/login/", {"username": victim.username, "password": "wrong"})
    member = Membership.objects.get(user=victim)
    owner = globex.client(Role.OWNER)
    page = owner.get(reverse("tenants:member-list", args=["globex"])).content.decode()
    assert victim.username not in page
    assert 'id="no-lockouts"' in page
    foreign = owner.post(reverse("tenants:member-unlock", args=["globex", member.pk]))
    assert foreign.status_code == 404
    assert AccessAttempt.objects.filter(username=victim.username).exists()
    assert not AuditEvent.objects.filter(action="member.unlocked").exists()


def test_api_policy_is_the_tokens_tenants_and_a_change_stays_there(acme, globex):
    acme.api(Role.OWNER).patch(reverse("api:policy"), {"retention_days": 7}, "application/json")
    assert globex.api(Role.AUDITOR).get(reverse("api:policy")).json()["retention_days"] is None
    changed = globex.api(Role.OWNER).patch(
        reverse("api:policy"), {"retention_days": 90}, "application/json"
    )
    assert changed.json()["retention_days"] == 90
    assert acme.api(Role.AUDITOR).get(reverse("api:policy")).json()["retention_days"] == 7
    assert not AuditEvent.objects.filter(
        tenant=acme.tenant, action="tenant.policy_changed", metadata__retention_days__to=90
    ).exists()


def test_api_invitations_and_mfa_policy_are_the_tokens_tenants(acme, globex):
    from tests.identity.conftest import invite

    invitation = invite(acme, "invitee@elsewhere.example")
    TenantMfaPolicy.objects.create(tenant=acme.tenant, required_roles=["owner"])
    assert globex.api(Role.OWNER).get(reverse("api:invitation-list")).json()["results"] == []
    assert globex.api(Role.AUDITOR).get(reverse("api:mfa-policy")).json()["required_roles"] == []
    changed = globex.api(Role.OWNER).patch(
        reverse("api:mfa-policy"), {"required_roles": ["admin"]}, "application/json"
    )
    assert changed.json()["required_roles"] == ["admin"]
    assert TenantMfaPolicy.objects.get(tenant=acme.tenant).required_roles == ["owner"]
    invitation.refresh_from_db()
    assert invitation.revoked_at is None
