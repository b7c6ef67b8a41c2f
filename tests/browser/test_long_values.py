"""In Chromium: a run with ~900 KB of input is a page of ordinary height whose cut value
downloads whole; the favicon loads; a missing page is Swrly's 404."""

import json

from runs.models import StepRun
from tenants.models import Role
from tests.browser.conftest import sign_in, watch_csp
from tests.pages.conftest import make_run

PASSWORD = "correct horse battery staple"


def _sign_in_owner(page, live_server, world) -> None:
    owner = world.users[Role.OWNER]
    owner.set_password(PASSWORD)
    owner.save()
    sign_in(page, live_server.url, owner, PASSWORD)
    page.wait_for_url(f"{live_server.url}/t/{world.tenant.slug}/")


def test_a_huge_run_is_a_short_page_and_its_input_downloads_whole(acme, live_server, page):
    run = make_run(acme)
    run.input = {"document": "lorem ipsum dolor sit amet\n" * 34_000, "tail": "END-OF-INPUT"}
    run.save(update_fields=["input"])
    StepRun.objects.filter(run=run, position=0).update(output_text="o" * 300_000)
    csp = watch_csp(page)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    _sign_in_owner(page, live_server, acme)

    page.goto(f"{live_server.url}/t/acme/runs/{run.pk}/")
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 20_000, height  # 168,000 px before values were cut
    note = page.locator('p.clipped[data-part="input"]')
    assert "Showing the first" in note.inner_text()
    with page.expect_download() as info:
        note.locator("a").click()
    download = info.value
    assert download.failure() is None
    assert download.suggested_filename == f"run-{run.pk}-input.json"
    with open(download.path(), encoding="utf-8") as handle:
        assert json.load(handle) == run.input
    assert failed == []  # the favicon and the stylesheet included
    assert csp == []


def test_the_browser_gets_the_favicon_and_swrlys_404(acme, live_server, page, settings):
    settings.DEBUG = True  # the yellow page's setting
    icon = page.goto(f"{live_server.url}/favicon.ico")
    assert icon.status == 200  # after the 301 to the SVG
    assert icon.headers["content-type"].startswith("image/svg+xml")
    missing = page.goto(f"{live_server.url}/no-such-page/")
    assert missing.status == 404
    assert page.title() == "Not found · Swrly"
    assert page.locator("h1").inner_text() == "Not found"
