"""The tenant settings page in a real browser: an owner narrows the policy through the form;
an auditor reads it without a form; the CSP holds."""

from swrly.audit.models import AuditEvent
from tenants.models import Role, Tenant
from tests.browser.conftest import screenshot, sign_in, watch_csp

PASSWORD = "correct horse battery staple"


def _signed_in(world, role, live_server, page):
    user = world.users[role]
    user.set_password(PASSWORD)
    user.save()
    sign_in(page, live_server.url, user, PASSWORD)
    page.wait_for_url(f"{live_server.url}/t/acme/")


def test_an_owner_narrows_the_policy_in_the_browser(acme, live_server, page, settings):
    settings.PROVIDER_BASE_URLS = {
        "anthropic": "https://api.anthropic.com",
        "openai": "https://api.openai.com",
    }
    csp = watch_csp(page)
    _signed_in(acme, Role.OWNER, live_server, page)

    page.get_by_role("link", name="Settings").click()
    page.wait_for_url(f"{live_server.url}/t/acme/settings/")
    assert (
        page.locator('tr[data-policy="providers"]')
        .inner_text()
        .startswith("Providers workflows may use\tevery provider the platform enables")
    )
    page.get_by_label("Only the providers ticked below").check()
    page.locator('input[name="providers"][value="openai"]').check()
    page.get_by_label("Allowed openai models").fill("gpt-4o-mini\no3-*")
    page.get_by_label("Maximum stored key lifetime, in seconds").fill("600")
    page.get_by_label("Run content retention, in days").fill("30")
    page.get_by_role("button", name="Save the policy").click()

    page.wait_for_selector(".messages")
    assert "Policy saved" in page.locator(".messages").inner_text()
    assert page.locator('tr[data-policy="providers"] td').nth(1).inner_text() == "openai"
    assert "o3-*" in page.locator('tr[data-policy="models"]').inner_text()
    assert "30 days after a run ends" in page.locator('tr[data-policy="retention"]').inner_text()
    assert page.locator('input[name="max_key_ttl"]').input_value() == "600"
    screenshot(page, "settings")
    tenant = Tenant.objects.get(pk=acme.tenant.pk)
    assert tenant.allowed_providers == ["openai"]
    assert tenant.allowed_models == {"openai": ["gpt-4o-mini", "o3-*"]}
    assert AuditEvent.objects.filter(tenant=tenant, action="tenant.policy_changed").count() == 1

    # a value out of range is refused next to its field, and nothing changes
    page.get_by_label("Run content retention, in days").fill("0")
    page.get_by_role("button", name="Save the policy").click()
    assert "days from 1 to 3650" in page.locator("#policy-edit .error").inner_text()
    assert Tenant.objects.get(pk=tenant.pk).retention_days == 30
    assert csp == []


def test_an_auditor_reads_the_policy_without_a_form(acme, live_server, page):
    Tenant.objects.filter(pk=acme.tenant.pk).update(retention_days=7)
    _signed_in(acme, Role.AUDITOR, live_server, page)
    page.goto(f"{live_server.url}/t/acme/settings/")
    assert "7 days after a run ends" in page.locator("#policy").inner_text()
    assert page.locator("form.policy-form").count() == 0
    assert page.locator("#policy-mfa").is_visible()
