"""Sign-in in a real browser, and the CSP holding with no violations."""

from tenants.models import Role
from tests.browser.conftest import sign_in


def test_an_owner_signs_in_and_reaches_the_tenant(acme, live_server, page):
    owner = acme.users[Role.OWNER]
    owner.set_password("correct horse battery staple")
    owner.save()
    violations = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )

    sign_in(page, live_server.url, owner, "correct horse battery staple")

    page.wait_for_url(f"{live_server.url}/t/acme/")
    assert page.locator("h1").first.inner_text() == "Acme"
    assert violations == []


def test_a_wrong_password_is_refused(acme, live_server, page):
    sign_in(page, live_server.url, acme.users[Role.AUDITOR], "not the password")
    assert "/accounts/login/" in page.url
    assert page.locator("[role=alert]").is_visible()
