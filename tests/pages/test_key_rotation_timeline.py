"""A rotation between a run's deposit and its take, on that run's key timeline and the dashboard.

Everything real: runs created through the API (keys deposited in the key store), `rotate-keys`
rewrapping them under a new encryption key, the executor taking the key on the sandbox
provider, then the pages.
"""

import io
import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from runs.executor import run_execute
from runs.models import Run, RunStatus
from swrly.audit.models import AuditEvent
from swrly.custody.models import KeyRotation
from swrly.keys.keyring import generate_key, get_keyring
from tenants.models import Role
from tests.runs.provider_server import (  # noqa: F401  (pytest fixtures)
    provider_expected_keys,
    provider_server,
    provider_server_factory,
)

KEY = "sk-sandbox-rotation-page-0001"


def _queued_run(world) -> Run:
    response = world.api(Role.DEVELOPER).post(
        "/api/v1/runs/",
        {"workflow": str(world.workflow().pk), "provider_keys": {"sandbox": KEY}},
        "application/json",
    )
    assert response.status_code == 202, response.content
    return Run.objects.get(pk=response.json()["id"])


def _rotate(settings) -> tuple[str, str, KeyRotation]:
    """The rollout's step 2 (a new current key, the old one a fallback), then rotate-keys."""
    old = get_keyring().current.key_id_hex
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [settings.BYOK_ENCRYPTION_KEY]
    settings.BYOK_ENCRYPTION_KEY = generate_key()
    new = get_keyring().current.key_id_hex
    out = io.StringIO()
    call_command("rotate-keys", actor="page-test", stdout=out)
    assert "rewrapped 2," in out.getvalue()
    return old, new, KeyRotation.objects.get()


def _timeline(html: str, provider: str) -> str:
    section = re.search(r'<section id="key-timeline".*?</section>', html, re.S).group(0)
    return re.search(
        rf'<ol class="timeline" data-provider="{provider}">(.*?)</ol>', section, re.S
    ).group(1)


def _entry(timeline: str, kind: str) -> str:
    return re.search(rf'data-kind="{kind}">(.*?)</li>', timeline, re.S).group(1)


@pytest.mark.usefixtures("key_store", "provider_server")
def test_a_rotation_between_deposit_and_take_is_on_the_runs_key_timeline(acme, globex, settings):
    # given: a queued run in each tenant, their keys deposited under the current key
    run = _queued_run(acme)
    theirs = _queued_run(globex)
    # when: a rotation rewraps both stored keys, then a worker takes acme's
    old, new, rotation = _rotate(settings)
    assert run_execute(run_id=str(run.pk), worker="w1").status == RunStatus.SUCCEEDED

    # then: the timeline reads deposit (old id) → rewrap (old → new, which rotation, who) → take
    html = acme.client(Role.AUDITOR).get(reverse("runs:run-detail", args=["acme", run.pk]))
    timeline = _timeline(html.content.decode(), "sandbox")
    kinds = re.findall(r'data-kind="([a-z]+)"', timeline)
    assert kinds == ["deposited", "rewrapped", "consumed", "released"]
    assert old in _entry(timeline, "deposited")
    rewrapped = _entry(timeline, "rewrapped")
    assert "Rewrapped by an encryption-key rotation" in rewrapped
    assert f"/t/acme/keys/#rotation-{rotation.pk}" in rewrapped
    assert f"rotation <code>{str(rotation.pk)[:8]}</code>" in rewrapped
    assert "system:rotate-keys (page-test)" in rewrapped
    assert re.search(rf"From encryption key id</dt><dd>{old}<", rewrapped)
    assert re.search(rf"To encryption key id</dt><dd>{new}<", rewrapped)
    assert new in _entry(timeline, "consumed")
    # the rotation the link points to is on the key-history page, under that anchor
    history = acme.client(Role.AUDITOR).get("/t/acme/keys/").content.decode()
    assert f'id="rotation-{rotation.pk}"' in history

    # another tenant's rewrap facts never reach this tenant, and the other way round
    mine = AuditEvent.objects.filter(tenant=acme.tenant, action="key.rewrapped")
    assert [e.target for e in mine] == [f"run:{run.pk}"]
    assert mine.get().metadata == {
        "provider": "sandbox",
        "from_key_id": old,
        "to_key_id": new,
        "rotation": str(rotation.pk),
    }
    audit_page = acme.client(Role.AUDITOR).get("/t/acme/audit/?action=key.rewrapped")
    assert str(theirs.pk) not in audit_page.content.decode()
    assert str(run.pk)[:8] in audit_page.content.decode()
    theirs_events = AuditEvent.objects.filter(tenant=globex.tenant, action="key.rewrapped")
    assert [e.target for e in theirs_events] == [f"run:{theirs.pk}"]
    their_page = globex.client(Role.AUDITOR).get(
        reverse("runs:run-detail", args=["globex", theirs.pk])
    )
    their_timeline = _timeline(their_page.content.decode(), "sandbox")
    assert re.findall(r'data-kind="([a-z]+)"', their_timeline) == ["deposited", "rewrapped"]
    assert str(run.pk) not in their_page.content.decode()


@pytest.mark.usefixtures("key_store", "provider_server")
def test_the_dashboard_counts_what_rotations_rewrapped(acme, globex, settings):
    _queued_run(acme)
    _queued_run(globex)
    _rotate(settings)
    html = acme.client(Role.AUDITOR).get("/t/acme/").content.decode()
    legend = re.search(r"Key events per day.*?<ul class=\"legend\">(.*?)</ul>", html, re.S).group(1)
    assert re.search(r"rewrapped: 1<", legend), legend  # acme's one, not globex's
    rotations = re.search(r'<table id="latest-rotations">(.*?)</table>', html, re.S).group(1)
    assert re.findall(r'<td class="num">(\d+)</td>', rotations) == ["1"]  # the same count
