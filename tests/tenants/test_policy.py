"""The tenant's policies over the API and on the settings page: who reads, who changes, what
is refused, and the audit trail of every change."""

import html
import re

import pytest
from django.urls import reverse

from swrly.audit.models import AuditEvent
from tenants.models import Role, Tenant
from tenants.policy import key_ttl, key_ttl_floor

URL = "/api/v1/policy/"
PAGE = "/t/acme/settings/"
PLATFORM = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
    "sandbox": "https://sandbox.example",
}


@pytest.fixture(autouse=True)
def platform(settings):
    settings.PROVIDER_BASE_URLS = dict(PLATFORM)
    settings.BYOK_TOKEN_TTL = 900
    return settings


def _changes(tenant):
    return AuditEvent.objects.filter(tenant=tenant, action="tenant.policy_changed")


def _patch(world, body, role=Role.OWNER):
    return world.api(role).patch(URL, body, "application/json")


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.AUDITOR])
def test_owners_admins_and_auditors_read_the_policy_with_the_platforms_bounds(acme, role):
    body = acme.api(role).get(URL).json()
    assert body == {
        "allowed_providers": None,
        "allowed_models": {},
        "max_key_ttl": None,
        "retention_days": None,
        "platform_providers": ["anthropic", "openai", "sandbox"],
        "effective_providers": ["anthropic", "openai", "sandbox"],
        "platform_key_ttl": 900,
        "key_ttl_min": key_ttl_floor(),
        "key_ttl": 900,
    }


def test_developers_are_refused_and_the_refusal_is_audited(acme):
    assert acme.api(Role.DEVELOPER).get(URL).status_code == 403
    assert _patch(acme, {"retention_days": 1}, Role.DEVELOPER).status_code == 403
    reasons = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").values_list(
        "metadata__reason", flat=True
    )
    assert set(reasons) == {
        "role developer not allowed to GET",
        "role developer not allowed to PATCH",
    }


@pytest.mark.parametrize("role", [Role.ADMIN, Role.AUDITOR])
def test_only_owners_change_the_policy(acme, role):
    assert _patch(acme, {"retention_days": 1}, role).status_code == 403
    acme.tenant.refresh_from_db()
    assert acme.tenant.retention_days is None
    assert not _changes(acme.tenant).exists()


def test_an_owner_narrows_the_providers_and_models_and_the_change_is_audited(acme):
    response = _patch(
        acme,
        {
            "allowed_providers": ["sandbox", "anthropic", "sandbox"],
            "allowed_models": {"anthropic": ["claude-sonnet-4-*", "claude-haiku-4-5"]},
            "max_key_ttl": 600,
            "retention_days": 30,
        },
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["allowed_providers"] == ["anthropic", "sandbox"]  # registry order, once each
    assert body["effective_providers"] == ["anthropic", "sandbox"]
    assert body["key_ttl"] == 600
    acme.tenant.refresh_from_db()
    assert acme.tenant.retention_days == 30
    (event,) = _changes(acme.tenant)
    assert event.actor.startswith("token:owner-token")
    assert event.target == "tenant:acme"
    assert event.metadata == {
        "allowed_providers": {"from": None, "to": ["anthropic", "sandbox"]},
        "allowed_models": {
            "from": {},
            "to": {"anthropic": ["claude-sonnet-4-*", "claude-haiku-4-5"]},
        },
        "max_key_ttl": {"from": None, "to": 600},
        "retention_days": {"from": None, "to": 30},
    }


def test_the_same_policy_again_changes_and_audits_nothing(acme):
    _patch(acme, {"retention_days": 30})
    again = _patch(acme, {"retention_days": 30})
    assert again.status_code == 200
    assert _changes(acme.tenant).count() == 1


def test_null_sets_each_policy_back_to_the_platforms(acme):
    _patch(acme, {"allowed_providers": ["openai"], "max_key_ttl": 600, "retention_days": 5})
    response = _patch(
        acme, {"allowed_providers": None, "max_key_ttl": None, "retention_days": None}
    )
    assert response.json()["effective_providers"] == ["anthropic", "openai", "sandbox"]
    assert response.json()["key_ttl"] == 900
    last = _changes(acme.tenant).order_by("seq").last()
    assert last.metadata["retention_days"] == {"from": 5, "to": None}


def test_narrowing_the_providers_drops_the_model_lists_of_those_no_longer_allowed(acme):
    _patch(acme, {"allowed_models": {"openai": ["gpt-4o-mini"], "anthropic": ["claude-*"]}})
    body = _patch(acme, {"allowed_providers": ["anthropic"]}).json()
    assert body["allowed_models"] == {"anthropic": ["claude-*"]}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"allowed_providers": ["mistral"]}, "allowed_providers", "unknown provider mistral"),
        ({"allowed_providers": "openai"}, "allowed_providers", ""),
        ({"allowed_models": {"openai": []}}, "allowed_models.openai", "1 or more model names"),
        ({"allowed_models": {"openai": ["*"]}}, "allowed_models.openai", "trailing *"),
        ({"allowed_models": {"openai": ["gpt-*-mini"]}}, "allowed_models.openai", "trailing *"),
        ({"allowed_models": {"openai": [" gpt-4o"]}}, "allowed_models.openai", "without spaces"),
        ({"allowed_models": {"mistral": ["m"]}}, "allowed_models.mistral", "unknown provider"),
        ({"max_key_ttl": 901}, "max_key_ttl", "the platform's BYOK_TOKEN_TTL"),
        ({"max_key_ttl": 60}, "max_key_ttl", "seconds from"),
        ({"max_key_ttl": True}, "max_key_ttl", ""),
        ({"retention_days": 0}, "retention_days", "days from 1 to 3650"),
        ({"retention_days": 3651}, "retention_days", "days from 1 to 3650"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_a_change_that_does_not_fit_is_refused_naming_the_field(acme, body, field, message):
    response = _patch(acme, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"], error
    assert message in " ".join(error["fields"][field])
    acme.tenant.refresh_from_db()
    assert (acme.tenant.allowed_providers, acme.tenant.allowed_models) == (None, {})
    assert (acme.tenant.max_key_ttl, acme.tenant.retention_days) == (None, None)
    assert not _changes(acme.tenant).exists()


def test_a_policy_never_widens_the_platform(acme, platform):
    platform.PROVIDER_BASE_URLS = {"openai": "https://api.openai.com"}
    response = _patch(acme, {"allowed_providers": ["openai", "sandbox"]})
    assert response.status_code == 400
    (message,) = response.json()["error"]["fields"]["allowed_providers"]
    assert message.startswith("sandbox is not enabled on this platform (PROVIDER_BASE_URLS)")
    # models of a provider the policy leaves out are refused too
    _patch(acme, {"allowed_providers": ["openai"]})
    refused = _patch(acme, {"allowed_models": {"anthropic": ["claude-*"]}})
    assert refused.json()["error"]["fields"]["allowed_models.anthropic"] == [
        "anthropic is not an allowed provider of this policy"
    ]


def test_a_provider_the_platform_disables_later_leaves_the_tenants_runs_without_it(acme, platform):
    _patch(acme, {"allowed_providers": ["openai", "sandbox"]})
    platform.PROVIDER_BASE_URLS = {"openai": "https://api.openai.com"}
    body = acme.api(Role.AUDITOR).get(URL).json()
    assert body["allowed_providers"] == ["openai", "sandbox"]
    assert body["effective_providers"] == ["openai"]  # the platform's narrowing wins


def test_a_key_ttl_the_tenants_queue_wait_budget_cannot_hold_is_refused(acme):
    tenant = Tenant.objects.get(pk=acme.tenant.pk)
    tenant.max_queued_runs, tenant.max_running_runs = 2000, 1
    tenant.save()
    response = _patch(acme, {"max_key_ttl": 600})
    assert response.status_code == 400
    (message,) = response.json()["error"]["fields"]["max_key_ttl"]
    assert "2000 queued / 1 running" in message
    assert "outlive its keys" in message


def test_the_effective_key_ttl_is_the_lower_of_the_platforms_and_the_tenants(acme, platform):
    _patch(acme, {"max_key_ttl": 700})
    acme.tenant.refresh_from_db()
    assert key_ttl(acme.tenant) == 700
    platform.BYOK_TOKEN_TTL = 650  # an operator lowers the platform's: it wins
    assert key_ttl(acme.tenant) == 650


# --- The settings page ------------------------------------------------------------------------


def _form(html: str) -> str | None:
    found = re.search(r'<form method="post" class="stack policy-form".*?</form>', html, re.S)
    return found.group(0) if found else None


def test_the_owner_sees_the_form_and_saves_the_policy_through_it(acme):
    client = acme.client(Role.OWNER)
    page = client.get(PAGE).content.decode()
    form = _form(page)
    assert form is not None
    assert 'id="policy-mfa"' in page  # the section the MFA work fills
    assert 'aria-current="page">Settings</a>' in page

    response = client.post(
        PAGE,
        {
            "providers_mode": "only",
            "providers": ["openai", "sandbox"],
            "models_openai": "gpt-4o-mini\n\n o3-* \n",
            "max_key_ttl": "600",
            "retention_days": "30",
        },
    )

    assert response.status_code == 302
    acme.tenant.refresh_from_db()
    assert acme.tenant.allowed_providers == ["openai", "sandbox"]
    assert acme.tenant.allowed_models == {"openai": ["gpt-4o-mini", "o3-*"]}
    assert (acme.tenant.max_key_ttl, acme.tenant.retention_days) == (600, 30)
    event = _changes(acme.tenant).get()
    assert event.actor == f"user:{acme.users[Role.OWNER].username}"
    shown = client.get(PAGE).content.decode()
    assert "Policy saved" in shown
    assert "30 days after a run ends" in shown
    assert "<code>o3-*</code>" in shown


def test_the_page_shows_what_is_refused_next_to_the_field(acme):
    response = acme.client(Role.OWNER).post(
        PAGE, {"providers_mode": "all", "max_key_ttl": "5", "retention_days": "0"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "seconds from" in html
    assert "days from 1 to 3650" in html
    acme.tenant.refresh_from_db()
    assert acme.tenant.max_key_ttl is None
    assert not _changes(acme.tenant).exists()


@pytest.mark.parametrize("role", [Role.ADMIN, Role.AUDITOR])
def test_admins_and_auditors_read_the_page_without_a_form_and_cannot_post(acme, role):
    client = acme.client(role)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert _form(page.content.decode()) is None
    assert "Only owners change them." in page.content.decode()
    refused = client.post(PAGE, {"providers_mode": "all", "retention_days": "1"})
    assert refused.status_code == 403
    acme.tenant.refresh_from_db()
    assert acme.tenant.retention_days is None
    denied = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied")
    assert denied.order_by("seq").last().metadata["reason"] == f"role {role} not allowed"


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.AUDITOR])
def test_the_page_shows_the_mfa_policy_and_links_to_it(acme, role):
    from swrly.identity.models import TenantMfaPolicy

    before = acme.client(role).get(PAGE).content.decode()
    assert "Required for: no role." in html.unescape(re.sub(r"<[^>]+>", "", before))
    # developers (who never open this page): the readers here need no second factor themselves
    TenantMfaPolicy.objects.create(tenant=acme.tenant, required_roles=["developer"])
    body = acme.client(role).get(PAGE).content.decode()
    section = body.split('id="policy-mfa"', 1)[1].split("</section>", 1)[0]
    assert re.sub(r"<[^>]+>", "", section).count("Required for: Developer.") == 1
    assert f'href="{reverse("identity:mfa-policy", args=["acme"])}"' in section


def test_developers_get_403_on_the_settings_page(acme):
    assert (
        acme.client(Role.DEVELOPER)
        .get(reverse("tenants:tenant-settings", args=["acme"]))
        .status_code
        == 403
    )


def test_tenant_limits_warns_when_the_tenants_key_ttl_cannot_hold_its_queue(acme):
    from io import StringIO

    from django.core.management import call_command

    _patch(acme, {"max_key_ttl": 400})
    out, err = StringIO(), StringIO()
    call_command("tenant-limits", "acme", "--max-queued-runs", "5000", stdout=out, stderr=err)
    assert "Warning: with this tenant's run limits (5000 queued / 10 running)" in err.getvalue()
    quiet = StringIO()
    call_command("tenant-limits", "acme", "--max-queued-runs", "default", stderr=quiet)
    assert quiet.getvalue() == ""
