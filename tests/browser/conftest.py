"""Browser tests: Debian's Chromium driven by Playwright against a live server.

The live server (pytest-django's, in a thread), a real Celery worker and the sandbox provider
make the whole stack; Chromium is /usr/bin/chromium (never a downloaded browser).
"""

import os
from pathlib import Path

import pytest

from tests.runs.conftest import celery_worker, key_store  # noqa: F401  (pytest fixtures)
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    provider_expected_keys,
    provider_server,
    provider_server_factory,
)

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Flags for a closed network (no background calls to Google) and a root user in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def _playwright():
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # around it are synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def chromium(_playwright):
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: `apt-get install chromium` (Debian's package)"
        if os.environ.get("SWRLY_REQUIRE_BROWSER"):  # .ci/run sets it: there, missing is a failure
            pytest.fail(message)
        pytest.skip(message)
    browser = _playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="Europe/Paris"
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def sign_in(page, base_url: str, user, password: str) -> None:
    """Sign in through the real login form."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", password)
    page.click("button[type=submit]")
