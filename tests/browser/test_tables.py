"""Every table shows every column: at 1280 and 1024 px no cell sticks out of the viewport or
cuts its content, and the audit log keeps one short row per event; at 390 px a table scrolls
inside its own box and shows that it does (shadows on the side there is more to see).

The pages are seeded through the models with long values: long workflow and token names, a
long unbroken provider error, long rotation key ids, a long webhook address.
"""

import base64
from datetime import UTC, datetime, timedelta

import pytest
from axes.models import AccessAttempt

from runs.models import RunStatus, StepRun, StepStatus
from runs.services import workflow_create
from swrly.audit.writer import Actor, audit_record
from swrly.custody.models import KeyRotation, KeyRotationTenant, RotationOutcome
from tenants.authority import Principal
from tenants.models import Membership, Role
from tenants.webhooks import audit_webhook_create
from tests.browser.conftest import sign_in, watch_csp
from tests.identity.conftest import invite
from tests.pages.conftest import KEY_A, KEY_B, key_print, make_run

PASSWORD = "correct horse battery staple"
LONG_ERROR = (
    "step draft: the provider answered 400 "
    + "invalid_request_error:"
    + "x" * 160
    + " — Incorrect API key provided: [REDACTED]. You can find your API key at "
    "https://platform.example.com/account/api-keys/with/a/very/long/path/segment/for/good/measure"
)

# Each cell: its box must lie inside the viewport, and its content must not overflow it.
CELLS = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("main table td, main table th")]
    .filter(c => !c.closest(".sr-only") && c.getClientRects().length)
    .map(c => {
      const r = c.getBoundingClientRect(), t = c.closest("table");
      return {table: t.id || t.className || t.getAttribute("aria-label") || "?",
              text: c.textContent.trim().slice(0, 40),
              left: r.left, right: r.right, width,
              scroll: c.scrollWidth, client: c.clientWidth,
              tableScroll: t.scrollWidth, tableClient: t.clientWidth};
    });
}"""


def _seed(world, other) -> dict:
    """Long values on every page; returns the run with a failed step."""
    owner = world.users[Role.OWNER]
    owner.set_password(PASSWORD)
    owner.save()
    # a second tenant, so the home page lists tenants
    Membership.objects.create(tenant=other.tenant, user=owner, role=Role.AUDITOR)
    now = datetime.now(UTC).replace(microsecond=0)
    runs = [
        make_run(world, at=now - timedelta(minutes=i), events=True, key=key)
        for i, key in enumerate((KEY_A, KEY_B, KEY_A))
    ]
    failed = make_run(
        world,
        at=now - timedelta(minutes=5),
        status=RunStatus.FAILED,
        error_code="provider_error",
        events=True,
    )
    failed.workflow_name = "quarterly-security-review-of-every-vendor-contract-" + "and-more" * 3
    failed.triggered_by = "token:a-deploy-token-with-a-rather-long-descriptive-name (swr_abc…)"
    sandbox = key_print("sk-sandbox-" + "c" * 40, "sandbox")
    failed.key_fingerprints = {
        **failed.key_fingerprints,
        "sandbox": {"fingerprint": sandbox.value, "hint": sandbox.hint},
    }
    failed.save()
    StepRun.objects.filter(run=failed, position=1).update(
        status=StepStatus.FAILED,
        http_status=400,
        error=LONG_ERROR,
        provider_request_id="req_" + "0123456789abcdef" * 4,
        model="claude-3-5-sonnet-20241022-with-a-long-suffix",
    )
    rotation = KeyRotation.objects.create(
        started_at=now - timedelta(hours=1),
        finished_at=now - timedelta(hours=1) + timedelta(seconds=2),
        actor="user:a.very.long.operator.name@security.acme.example",
        from_key_ids=["0a1b2c3d4e5f6071", "1b2c3d4e5f607182"],
        to_key_id="9f8e7d6c5b4a3928",
        scanned=50,
        rewrapped=40,
        outcome=RotationOutcome.SUCCEEDED,
    )
    KeyRotationTenant.objects.create(rotation=rotation, tenant=world.tenant, rewrapped=2)
    by = Principal.member(Membership.objects.get(tenant=world.tenant, user=owner), user=owner)
    audit_webhook_create(
        tenant=world.tenant,
        url="https://siem.security-operations.acme.example/services/collector/raw/"
        + "ingest-endpoint-" * 4,
        by=by,
    )
    # a member locked out of sign-in from a long IPv6 address: the owner's lockouts table
    AccessAttempt.objects.create(
        username=world.users[Role.DEVELOPER].username,
        ip_address="2001:db8:85a3:1234:5678:8a2e:370:7334",
        user_agent="Mozilla/5.0",
        failures_since_start=5,
        get_data="",
        post_data="",
        http_accept="*/*",
        path_info="/accounts/login/",
    )
    workflow = workflow_create(
        tenant=world.tenant,
        name="quarterly-security-review-of-every-vendor-contract-" + "and-more" * 3,
        steps=[
            {
                "name": f"step_{p}",
                "provider": p,
                "model": "a-model-with-a-long-name-" * 2,
                "prompt": "x",
            }
            for p in ("anthropic", "openai", "sandbox")
        ],
        actor=Actor(label="user:a.very.long.operator.name@security.acme.example"),
    )
    return {"failed": failed, "runs": runs, "workflow": workflow}


def _fill_audit(world, count: int = 60) -> None:
    """Events of many shapes, long ones included, so the first page has 50."""
    system = Actor.system("worker celery@3f9a0c1d2e4b")
    fp = key_print(KEY_A).value
    shapes = [
        (
            "key.consumed",
            {
                "provider": "anthropic",
                "fingerprint": fp,
                "worker": "celery@worker-host-01234567",
                "encryption_key_id": "0a1b2c3d",
                "destination": "https://api.anthropic.com:443",
            },
        ),
        (
            "run.succeeded",
            {
                "keys_released": ["anthropic", "openai"],
                "sent_to": {"anthropic": {"https://api.anthropic.com:443": 3}},
            },
        ),
        (
            "encryption_key.rotated",
            {
                "from_key_ids": ["0a1b2c3d4e5f6071"],
                "to_key_id": "9f8e7d6c5b4a3928",
                "rewrapped": 2,
            },
        ),
        (
            "access.denied",
            {"reason": "role", "path": "/t/acme/tokens/" + "a-long-path-segment/" * 4},
        ),
        ("workflow.updated", {"fields": ["name", "steps", "description", "input_schema"]}),
    ]
    for i in range(count):
        action, metadata = shapes[i % len(shapes)]
        audit_record(
            tenant=world.tenant,
            action=action,
            actor=system,
            target=f"run:{world.run().pk}" if action.startswith(("key", "run")) else "tenant:acme",
            metadata=metadata,
        )


def _sign_in(page, live_server, world) -> None:
    sign_in(page, live_server.url, world.users[Role.OWNER], PASSWORD)
    page.wait_for_url(f"{live_server.url}/")


def _paths(seeded) -> list[str]:
    failed = seeded["failed"]
    return [
        "/t/acme/",
        "/t/acme/runs/",
        f"/t/acme/runs/{failed.pk}/",
        "/t/acme/keys/",
        "/t/acme/audit/",
        "/t/acme/audit/webhooks/",
        "/t/acme/members/",
        "/t/acme/members/invitations/",
        "/t/acme/tokens/",
        f"/t/acme/workflows/{seeded['workflow'].pk}/run/",
        "/t/acme/settings/",
        "/t/acme/workflows/",
    ]


@pytest.mark.parametrize("width", [1280, 1024])
def test_every_column_of_every_table_is_visible_and_uncut(
    acme, globex, live_server, page_factory, width
):
    seeded = _seed(acme, globex)
    _fill_audit(acme, 12)
    invite(acme, "a.rather.long.invitee-address@security.subdomain.example.com", Role.AUDITOR)
    page = page_factory(width, 900)
    csp = watch_csp(page)
    _sign_in(page, live_server, acme)
    checked = 0
    for path in _paths(seeded):
        page.goto(live_server.url + path)
        page.wait_for_load_state("load")
        sideways = page.evaluate("() => document.documentElement.scrollWidth")
        assert sideways <= width, (path, sideways)  # the page itself never scrolls sideways
        cells = page.evaluate(CELLS)
        assert cells, f"{path}: no table"
        if path == "/t/acme/members/":
            assert page.locator("#lockouts tbody tr").count() == 1  # the seeded lockout
        for cell in cells:
            where = (path, cell)
            assert cell["left"] >= -0.5, where
            assert cell["right"] <= cell["width"] + 0.5, where
            assert cell["scroll"] <= cell["client"] + 1, where  # nothing cut inside the cell
            assert cell["tableScroll"] <= cell["tableClient"] + 1, where  # no sideways scroll
        checked += len(cells)
    assert checked > 200, checked
    # the runs list puts what a reviewer checks first: status, keys, who triggered the run
    page.goto(f"{live_server.url}/t/acme/runs/")
    headers = [h.strip() for h in page.locator("#runs thead th").all_inner_texts()]
    assert headers[:4] == ["Run", "Status", "Keys", "Triggered by"], headers
    assert csp == []


@pytest.mark.parametrize("width", [1280, 1024])
def test_the_audit_log_keeps_one_short_row_per_event(
    acme, globex, live_server, page_factory, width
):
    _seed(acme, globex)
    _fill_audit(acme, 60)
    page = page_factory(width, 900)
    _sign_in(page, live_server, acme)
    page.goto(f"{live_server.url}/t/acme/audit/")
    rows = page.locator("#audit-events tbody tr")
    assert rows.count() == 50
    line = page.evaluate(
        "() => parseFloat(getComputedStyle(document.querySelector('#audit-events td')).lineHeight)"
    )
    assert 15 < line < 40, line
    heights = rows.evaluate_all("rs => rs.map(r => r.getBoundingClientRect().height)")
    assert max(heights) < 3 * line, (line, sorted(heights)[-5:])
    table_height = page.locator("#audit-events").bounding_box()["height"]
    assert table_height < 50 * 3 * line + 100, table_height  # once 12,000 px and more

    # a summary names the key by provider and fingerprint, the worker, never more
    consumed = page.locator('#audit-events tr[data-action="key.consumed"]').first
    summary = consumed.locator("details > summary")
    fp = key_print(KEY_A).value
    named = f"anthropic key fp {fp.removeprefix('v2:')[:8]} taken by worker celery@"
    assert summary.inner_text().startswith(named), summary.inner_text()
    # closed: the metadata is not shown; opened in place: every key of it
    metadata = consumed.locator("dl.metadata")
    assert not metadata.is_visible()
    before = consumed.bounding_box()["height"]
    summary.click()
    assert metadata.is_visible()
    names = metadata.locator("dt").all_inner_texts()
    assert sorted(names) == [
        "destination",
        "encryption_key_id",
        "fingerprint",
        "provider",
        "worker",
    ]
    assert fp in metadata.inner_text()
    assert consumed.bounding_box()["height"] > before


def test_a_narrow_screen_scrolls_tables_with_a_visible_affordance(
    acme, globex, live_server, page_factory
):
    _seed(acme, globex)
    _fill_audit(acme, 12)
    page = page_factory(390, 844)
    _sign_in(page, live_server, acme)
    for path, selector in (("/t/acme/runs/", "#runs"), ("/t/acme/audit/", "#audit-events")):
        page.goto(live_server.url + path)
        table = page.locator(selector)
        box = page.evaluate(
            """s => {const t = document.querySelector(s), st = getComputedStyle(t);
                     return {scroll: t.scrollWidth, client: t.clientWidth, overflow: st.overflowX,
                             right: t.getBoundingClientRect().right,
                             viewport: document.documentElement.clientWidth,
                             page: document.documentElement.scrollWidth,
                             images: st.backgroundImage, attachments: st.backgroundAttachment,
                             scrollbar: st.scrollbarWidth}}""",
            selector,
        )
        assert box["overflow"] == "auto", box
        assert box["scroll"] > box["client"], box  # more columns than the screen holds
        assert box["right"] <= box["viewport"], box  # the page itself does not scroll
        assert box["page"] <= box["viewport"], box
        # the affordance: shadows (radial gradients fixed to the box's edges, uncovered on the
        # side there is more to see) and a thin, coloured scrollbar
        assert box["images"].count("radial-gradient") == 2, box
        assert box["attachments"].split(", ") == ["local", "local", "scroll", "scroll"], box
        assert box["scrollbar"] == "thin", box
        # the right shadow is visible at the start, and covered once scrolled to the end
        start = _edge_darkness(table, page, "right")
        assert start > 0, start
        table.evaluate("t => { t.scrollLeft = t.scrollWidth; }")
        assert _edge_darkness(table, page, "right") < start
        assert _edge_darkness(table, page, "left") > 0


def _edge_darkness(table, page, side: str) -> int:
    """How much darker than white the pixels of a thin strip at the table's edge are: the
    shadow, sampled on the table's screenshot (PNG decoded by the browser itself)."""
    png = table.screenshot()
    data = base64.b64encode(png).decode()
    return page.evaluate(
        """async ([data, side]) => {
             const img = new Image(); img.src = "data:image/png;base64," + data;
             await img.decode();
             const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
             const g = c.getContext("2d"); g.drawImage(img, 0, 0);
             const x = side === "right" ? img.width - 4 : 1;
             const px = g.getImageData(x, 0, 3, img.height).data;
             let dark = 0;
             for (let i = 0; i < px.length; i += 4) {
               if (px[i] < 250 && px[i] === px[i + 1]) dark++;
             }
             return dark;
           }""",
        [data, side],
    )


def test_key_periods_are_readable_on_a_narrow_screen(acme, globex, live_server, page_factory):
    _seed(acme, globex)
    page = page_factory(390, 844)
    _sign_in(page, live_server, acme)
    page.goto(f"{live_server.url}/t/acme/keys/")
    bars = page.locator("table#provider-keys svg.key-period")
    assert bars.count() == 2  # KEY_A and KEY_B
    for i in range(bars.count()):
        box = bars.nth(i).bounding_box()
        assert box["x"] >= 0, box
        assert box["x"] + box["width"] <= 390, box  # on screen, not scrolled out of view
        assert box["width"] >= 250, box  # across the card, long enough to compare periods
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    names = page.locator("table#provider-keys .key-name").all_inner_texts()
    assert all(" fp " in name for name in names), names
