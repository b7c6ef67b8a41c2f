"""Who sees which page, what auditors never see, and what every page's HTML may not contain."""

import re

import pytest
from django.urls import reverse

from swrly.audit.models import AuditEvent
from tenants.models import Role
from tests.pages.conftest import CANARY, T0, assert_clean_html, make_rotation, make_run

ALL_ROLES = list(Role)
AUDIT_ROLES = [Role.OWNER, Role.ADMIN, Role.AUDITOR]
CONTENT_ROLES = [Role.OWNER, Role.ADMIN, Role.DEVELOPER]
RUN_WRITE_ROLES = CONTENT_ROLES  # who triggers and cancels runs, as in the API
MANAGE_ROLES = [Role.OWNER, Role.ADMIN]


def _body(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


@pytest.fixture
def world(acme):
    """acme with a finished run, a failed one, a key, a rotation and their audit trail."""
    acme.runs = [
        make_run(acme, at=T0, events=True),
        make_run(acme, at=T0, status="failed", error_code="provider_error", events=True),
    ]
    make_rotation(acme)
    return acme


def _pages(world) -> dict[str, tuple[str, list[str]]]:
    """name -> (url, roles allowed)"""
    run = world.runs[0]
    return {
        "dashboard": (reverse("runs:dashboard", args=["acme"]), ALL_ROLES),
        "runs": (reverse("runs:run-list", args=["acme"]), ALL_ROLES),
        "run": (reverse("runs:run-detail", args=["acme", run.pk]), ALL_ROLES),
        "run-input": (reverse("runs:run-value", args=["acme", run.pk, "input"]), CONTENT_ROLES),
        "run-output": (
            reverse("runs:run-value", args=["acme", run.pk, "step-0-output"]),
            CONTENT_ROLES,
        ),
        "run-error": (reverse("runs:run-value", args=["acme", run.pk, "step-0-error"]), ALL_ROLES),
        "keys": (reverse("custody:key-history", args=["acme"]), ALL_ROLES),
        "audit": (reverse("tenants:audit-list", args=["acme"]), AUDIT_ROLES),
        "audit-csv": (reverse("tenants:audit-export-csv", args=["acme"]), AUDIT_ROLES),
        "audit-jsonl": (reverse("tenants:audit-export-jsonl", args=["acme"]), AUDIT_ROLES),
        "trigger": (
            reverse("runs:run-trigger", args=["acme", world.workflow().pk]),
            RUN_WRITE_ROLES,
        ),
        "cancel": (reverse("runs:run-cancel", args=["acme", run.pk]), RUN_WRITE_ROLES),
        "member-remove": (
            reverse("tenants:member-remove", args=["acme", _membership(world, Role.AUDITOR)]),
            MANAGE_ROLES,
        ),
        "token-revoke": (
            reverse("tenants:apitoken-revoke", args=["acme", world.token(Role.AUDITOR).pk]),
            MANAGE_ROLES,
        ),
        "settings": (reverse("tenants:tenant-settings", args=["acme"]), AUDIT_ROLES),
    }


def _membership(world, role):
    from tenants.models import Membership

    return Membership.objects.get(tenant=world.tenant, user=world.users[role]).pk


@pytest.mark.parametrize("role", ALL_ROLES)
def test_every_page_renders_for_allowed_roles_and_403s_for_the_others(world, role):
    client = world.client(role)
    for name, (url, allowed) in _pages(world).items():
        response = client.get(url)
        expected = 200 if role in allowed else 403
        assert response.status_code == expected, (name, role, response.status_code)


def test_a_refused_role_is_audited(world):
    world.client(Role.DEVELOPER).get(reverse("tenants:audit-list", args=["acme"]))
    denied = AuditEvent.objects.filter(tenant=world.tenant, action="access.denied").last()
    assert denied.metadata["reason"] == "role developer not allowed"
    assert denied.actor == f"user:{world.users[Role.DEVELOPER].username}"


def test_pages_need_a_login(world):
    from django.test import Client

    for url, _ in _pages(world).values():
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("role", ALL_ROLES)
def test_the_nav_links_only_to_pages_the_role_can_use(world, role):
    page = world.client(role).get(reverse("runs:run-list", args=["acme"])).content.decode()
    nav = re.search(r'<nav aria-label="Tenant">(.*?)</nav>', page, re.S).group(1)
    labels = re.findall(r">([^<]+)</a>", nav)
    expected = ["Dashboard", "Workflows", "Runs", "Keys"]
    if role in AUDIT_ROLES:
        expected.append("Audit")
    expected.append("Members")
    if role in AUDIT_ROLES:
        expected += ["API tokens", "Settings"]
    assert labels == expected
    assert 'href="/t/acme/runs/" aria-current="page"' in nav


def test_auditors_never_see_inputs_prompts_or_outputs(world):
    client = world.client(Role.AUDITOR)
    urls = [url for url, allowed in _pages(world).values() if Role.AUDITOR in allowed]
    urls += [reverse("runs:run-detail", args=["acme", run.pk]) for run in world.runs]
    urls.append(reverse("runs:run-list", args=["acme"]) + "?status=failed")
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert CANARY not in _body(response), url
    detail = client.get(urls[-2]).content.decode()
    # the auditor still sees what ran, where and with which key
    assert 'id="key-timeline"' in detail
    assert "req_0_" in detail
    assert 'id="run-content"' not in detail


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.DEVELOPER])
def test_developers_admins_and_owners_see_input_prompts_and_outputs(world, role):
    page = world.client(role).get(reverse("runs:run-detail", args=["acme", world.runs[0].pk]))
    body = page.content.decode()
    assert 'id="run-content"' in body
    assert f"input {CANARY}" in body
    assert f"prompt {CANARY}" in body
    assert f"output {CANARY}" in body


@pytest.mark.parametrize("role", ALL_ROLES)
def test_no_page_has_an_inline_script_or_a_style_attribute(world, role):
    client = world.client(role)
    for name, (url, _allowed) in _pages(world).items():
        if name.startswith(("audit-", "run-")):
            continue  # downloads, not HTML
        response = client.get(url)
        html = response.content.decode()
        assert_clean_html(html)
        if response.status_code == 200:
            assert 'src="/static/swrly/localtime.js" defer' in html


def test_every_post_form_carries_a_csrf_token(world):
    client = world.client(Role.OWNER)
    for name, (url, _) in _pages(world).items():
        if name.startswith(("audit-", "run-")):
            continue
        html = client.get(url).content.decode()
        for form in re.findall(r"<form[^>]*>.*?</form>", html, re.S):
            if 'method="post"' in form:
                assert "csrfmiddlewaretoken" in form, (name, form[:80])
            else:
                assert 'method="get"' in form, (name, form[:80])


def test_times_are_utc_time_elements_with_the_utc_value_on_hover(world):
    html = world.client(Role.OWNER).get(reverse("runs:run-list", args=["acme"])).content.decode()
    assert (
        '<time datetime="2025-03-03T09:00:01Z" title="2025-03-03 09:00:01 UTC">'
        "2025-03-03 09:00:01 UTC</time>"
    ) in html


def test_the_localtime_script_rewrites_time_elements_and_keeps_utc_on_hover():
    from pathlib import Path

    from django.contrib.staticfiles import finders

    script = Path(finders.find("swrly/localtime.js")).read_text()
    assert 'querySelectorAll("time[datetime]")' in script
    assert "textContent" in script
    assert "element.title" in script
