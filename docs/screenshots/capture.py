"""Screenshots of every page from a running stack (`make run`), for the README and the docs.

    .venv/bin/python docs/screenshots/capture.py http://127.0.0.1:8000 owner@acme.example PASSWORD

It signs in through the login form with Debian's Chromium (/usr/bin/chromium, driven by
Playwright); on the first sign-in with the generated password it changes it to
`PASSWORD-changed` (the stack asks for that) and says so. It saves two PNGs per page next to
this file: `<page>-1280.png` (desktop) and `<page>-390.png` (a phone). A page that answers an
error is reported and not saved.
"""

import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

HERE = Path(__file__).resolve().parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
WIDTHS = (1280, 390)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def _first_link(page: Page, url: str, selector: str) -> str | None:
    page.goto(url)
    link = page.locator(selector).first
    return link.get_attribute("href") if link.count() else None


def _pages(page: Page, base: str, tenant: str) -> dict[str, str]:
    t = f"/t/{tenant}"
    pages = {
        "dashboard": f"{t}/",
        "runs": f"{t}/runs/",
        "keys": f"{t}/keys/",
        "audit": f"{t}/audit/",
        "members": f"{t}/members/",
        "tokens": f"{t}/tokens/",
        "workflows": f"{t}/workflows/",
        "settings": f"{t}/settings/",
        "workflow-new": f"{t}/workflows/new/",
        "invitations": f"{t}/members/invitations/",
        "mfa-policy": f"{t}/settings/mfa/",
        "mfa-setup": "/accounts/mfa/",
        "password": "/accounts/password/",
    }
    run = _first_link(page, base + pages["runs"], "tr[data-run-id] a")
    if run:
        pages["run-detail"] = run
        pages["run-cancel"] = run.rstrip("/") + "/cancel/"
    workflow = _first_link(
        page, base + pages["workflows"], "table#workflows a[href*='/workflows/']"
    )
    if workflow:
        pages["workflow-detail"] = workflow
        pages["workflow-trigger"] = workflow.rstrip("/") + "/run/"
        pages["workflow-edit"] = workflow.rstrip("/") + "/edit/"
        pages["workflow-delete"] = workflow.rstrip("/") + "/delete/"
    return pages


def main(base: str, email: str, password: str, tenant: str = "acme") -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/accounts/login/")
        page.fill("#id_username", email)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        if "/accounts/password/" in page.url:  # a generated password: changed at first sign-in
            changed = f"{password}-changed"
            page.fill("#id_old_password", password)
            page.fill("#id_new_password1", changed)
            page.fill("#id_new_password2", changed)
            page.click("main button[type=submit]")  # not the header's "Sign out"
            page.wait_for_load_state()
            say(f"The generated password was changed to {changed}")
        for name, path in _pages(page, base, tenant).items():
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 900})
                response = page.goto(base + path if path.startswith("/") else path)
                if response is None or response.status >= 400:
                    say(f"{name}: {response.status if response else 'no response'}, not saved")
                    break
                page.screenshot(path=HERE / f"{name}-{width}.png", full_page=True)
                say(f"{name}-{width}.png")
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
