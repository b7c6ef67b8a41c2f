"""Browser tests: Debian's Chromium driven by Playwright against a live server.

The live server (pytest-django's, in a thread), a real Celery worker and the sandbox provider
make the whole stack; Chromium is /usr/bin/chromium (never a downloaded browser).
"""

import os
from pathlib import Path

import pytest

from tests.runs.conftest import celery_worker  # noqa: F401  (a pytest fixture)
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


def sign_in(page, base_url: str, user, password: str) -> None:
    """Sign in through the real login form."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", password)
    page.click("button[type=submit]")


@pytest.fixture
def page_factory(chromium):
    """New pages in fresh contexts (own cookies), like `page` but with a viewport of your choice."""
    contexts = []

    def make(width: int = 1280, height: int = 900, storage_state=None):
        context = chromium.new_context(
            viewport={"width": width, "height": height},
            timezone_id="Europe/Paris",
            locale="en-US",
            storage_state=storage_state,
        )
        contexts.append(context)
        new = context.new_page()
        new.set_default_timeout(15_000)
        return new

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(page_factory):
    """A page 1280 px wide in Europe/Paris (UTC+1 in winter), in a fresh context."""
    return page_factory()


def watch_csp(page) -> list[str]:
    """Every console message of `page` that reports a Content-Security-Policy violation."""
    violations: list[str] = []

    def record(message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            violations.append(f"{page.url}: {message.text}")

    page.on("console", record)
    return violations


def screenshot(page, name: str) -> None:
    """docs/screenshots/e2e-<name>.png of the whole page, only when SWRLY_SCREENSHOTS=1 (so CI
    leaves the committed files alone).

    The prefix keeps them apart from the screenshots docs/screenshots/capture.py takes of the
    `make run` stack (dashboard.png, runs.png, …).
    """
    if os.environ.get("SWRLY_SCREENSHOTS") != "1":
        return
    page.wait_for_load_state("load")  # localtime.js (deferred) has rewritten the dates
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"e2e-{name}.png"), full_page=True)
