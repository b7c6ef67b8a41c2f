"""Screenshots of the main pages from a running stack (`make run`), for the README.

    .venv/bin/python docs/screenshots/capture.py http://127.0.0.1:8000 owner@acme.example PASSWORD

It signs in through the login form with Debian's Chromium (/usr/bin/chromium, driven by
Playwright) and saves one PNG per page, 1280 px wide, next to this file.
"""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def main(base: str, email: str, password: str, tenant: str = "acme") -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/accounts/login/")
        page.fill("#id_username", email)
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/t/{tenant}/")
        pages = {
            "dashboard": f"/t/{tenant}/",
            "runs": f"/t/{tenant}/runs/",
            "keys": f"/t/{tenant}/keys/",
            "audit": f"/t/{tenant}/audit/",
            "members": f"/t/{tenant}/members/",
            "tokens": f"/t/{tenant}/tokens/",
        }
        for name, path in pages.items():
            page.goto(base + path)
            page.screenshot(path=HERE / f"{name}.png", full_page=True)
        page.goto(base + pages["runs"])
        first = page.locator("tr[data-run-id] a").first
        if first.count():
            first.click()
            page.wait_for_selector("#key-timeline")
            page.screenshot(path=HERE / "run-detail.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
