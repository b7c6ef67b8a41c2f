"""One run: its facts, its steps, and the key lifecycle timeline built from audit events."""

import re
import uuid
from datetime import timedelta

import time_machine
from django.urls import reverse

from runs.models import RunStatus, StepRun, StepStatus
from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor, audit_record
from tenants.models import Role
from tests.pages.conftest import KEY_A, T0, key_print, make_run


def _without_csrf(body: bytes) -> bytes:
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", body)


def _detail(world, run, role=Role.AUDITOR) -> str:
    response = world.client(role).get(reverse("runs:run-detail", args=["acme", run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def _timeline(html: str, provider: str) -> list[str]:
    section = re.search(r'<section id="key-timeline".*?</section>', html, re.S).group(0)
    items = re.search(rf'<ol class="timeline" data-provider="{provider}">(.*?)</ol>', section, re.S)
    return re.findall(r'data-kind="([a-z]+)"', items.group(1))


def test_the_timeline_shows_deposit_consumption_and_release(acme):
    run = make_run(acme, events=True)
    html = _detail(acme, run)
    assert _timeline(html, "anthropic") == ["deposited", "consumed", "released"]
    deposited = re.search(r'data-kind="deposited">(.*?)</li>', html, re.S).group(1)
    assert "token:ci (swr_abc…)" in deposited  # by whom
    assert "15 min 00 s" in deposited  # TTL
    assert key_print(KEY_A).hint in deposited
    assert "0a1b2c3d" in deposited  # the encryption key id
    consumed = re.search(r'data-kind="consumed">(.*?)</li>', html, re.S).group(1)
    assert "worker-7" in consumed
    assert "<time datetime=" in consumed


def test_a_key_that_expired_before_a_worker_took_it(acme):
    with time_machine.travel(T0, tick=False):
        run = make_run(acme, status=RunStatus.QUEUED, events=True)
    worker = Actor.system("run reaper")
    with time_machine.travel(T0 + timedelta(minutes=16), tick=False):
        fingerprint = key_print(KEY_A).value
        audit_record(
            tenant=acme.tenant,
            action="key.expired",
            actor=worker,
            target=f"run:{run.pk}",
            metadata={"provider": "anthropic", "fingerprint": fingerprint},
        )
        audit_record(
            tenant=acme.tenant,
            action="run.failed",
            actor=worker,
            target=f"run:{run.pk}",
            metadata={"error_code": "key_expired"},
        )
    html = _detail(acme, run)
    assert _timeline(html, "anthropic") == ["deposited", "expired", "ended"]
    assert "the key never reached a worker" in html


def test_a_cancelled_queued_run_shows_its_key_discarded(acme):
    run = make_run(acme, status=RunStatus.QUEUED, events=True)
    owner = Actor(label="user:owner@acme.example")
    audit_record(
        tenant=acme.tenant,
        action="run.cancelled",
        actor=owner,
        target=f"run:{run.pk}",
        metadata={"while": "queued"},
    )
    audit_record(
        tenant=acme.tenant,
        action="key.discarded",
        actor=owner,
        target=f"run:{run.pk}",
        metadata={"provider": "anthropic", "fingerprint": "x", "token_found": True},
    )
    html = _detail(acme, run)
    assert _timeline(html, "anthropic") == ["deposited", "ended", "discarded"]
    assert "the stored key was deleted from the key store" in html


def test_a_rejected_key(acme):
    run = make_run(acme, status=RunStatus.QUEUED, events=True)
    audit_record(
        tenant=acme.tenant,
        action="key.rejected",
        actor=Actor.system("worker w"),
        target=f"run:{run.pk}",
        metadata={"provider": "anthropic", "reason": "TokenAuthenticationFailed", "worker": "w"},
    )
    html = _detail(acme, run)
    assert _timeline(html, "anthropic") == ["deposited", "rejected"]
    assert "TokenAuthenticationFailed" in html


def test_the_timeline_shows_only_this_runs_events(acme):
    first = make_run(acme, events=True)
    second = make_run(acme, events=True)
    html = _detail(acme, first)
    seqs = {int(s) for s in re.findall(r"audit #(\d+)", html)}
    expected = set(
        AuditEvent.objects.filter(target=f"run:{first.pk}").values_list("seq", flat=True)
    )
    assert seqs == expected
    assert str(second.pk) not in html


def test_steps_show_provider_request_id_tokens_latency_attempts_and_redacted_error(acme):
    run = make_run(acme, status=RunStatus.FAILED, error_code="provider_error")
    StepRun.objects.filter(run=run, position=1).update(
        status=StepStatus.FAILED,
        error="provider said: bad key [redacted]",
        attempts=3,
        http_status=500,
        output_text="",
    )
    html = _detail(acme, run, Role.DEVELOPER)
    steps = re.search(r'<table id="steps">(.*?)</table>', html, re.S).group(1)
    assert f"req_0_{run.pk.hex[:8]}" in steps
    assert "120 ms" in steps
    assert "provider said: bad key [redacted]" in steps
    assert "HTTP 500" in steps
    failed = re.search(r'<tr data-step="1" data-status="failed">(.*?)</tr>', steps, re.S).group(1)
    assert '<td class="num">3</td>' in failed
    assert "provider_error" in html


def test_another_tenants_run_is_404_like_an_unknown_one_and_audited(acme, globex):
    foreign = make_run(globex)
    client = acme.client(Role.OWNER)
    response = client.get(reverse("runs:run-detail", args=["acme", foreign.pk]))
    assert response.status_code == 404
    denied = AuditEvent.objects.filter(tenant=acme.tenant, action="access.denied").last()
    assert denied.target == f"runs.run:{foreign.pk}"
    unknown = client.get(reverse("runs:run-detail", args=["acme", uuid.uuid4()]))
    assert unknown.status_code == 404
    assert _without_csrf(unknown.content) == _without_csrf(response.content)


def _store_line(html: str) -> tuple[str, str]:
    match = re.search(r'<p class="key-store" data-store="([a-z]+)">(.*?)</p>', html, re.S)
    return match.group(1), match.group(2)


def test_a_taken_key_says_it_was_deleted_from_the_key_store_not_when_it_expires(acme):
    run = make_run(acme, events=True)
    html = _detail(acme, run)
    state, text = _store_line(html)
    assert state == "deleted"
    assert "deleted from the key store at <time" in text
    consumed_at = AuditEvent.objects.get(action="key.consumed", target=f"run:{run.pk}").created_at
    stamp = consumed_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert f'datetime="{stamp}"' in text
    deposited = re.search(r'data-kind="deposited">(.*?)</li>', html, re.S).group(1)
    assert "Stored key expires" not in deposited
    assert "Stored key deleted" in deposited


def test_a_queued_runs_key_is_still_held_until_its_expiry(acme):
    run = make_run(acme, status=RunStatus.QUEUED, events=True)
    state, text = _store_line(_detail(acme, run))
    assert state == "held"
    assert "held in the key store until <time" in text


def test_a_discarded_or_expired_key_says_so(acme):
    discarded = make_run(acme, status=RunStatus.QUEUED, events=True)
    audit_record(
        tenant=acme.tenant,
        action="key.discarded",
        actor=Actor(label="user:owner@acme.example"),
        target=f"run:{discarded.pk}",
        metadata={"provider": "anthropic", "fingerprint": "x", "token_found": True},
    )
    assert _store_line(_detail(acme, discarded))[0] == "discarded"
    expired = make_run(acme, status=RunStatus.QUEUED, events=True)
    audit_record(
        tenant=acme.tenant,
        action="key.expired",
        actor=Actor.system("run reaper"),
        target=f"run:{expired.pk}",
        metadata={"provider": "anthropic", "fingerprint": "x"},
    )
    state, text = _store_line(_detail(acme, expired))
    assert (state, "expired in the key store at" in text) == ("expired", True)


def test_the_caller_address_and_user_agent_show_to_audit_readers_only(acme):
    from django.test import RequestFactory

    run = make_run(acme, status=RunStatus.QUEUED)
    request = RequestFactory().post(
        "/api/v1/runs/", REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="swrly-cli/1.4 " + "x" * 400
    )
    audit_record(
        tenant=acme.tenant,
        action="run.created",
        actor=Actor(label="token:ci"),
        target=f"run:{run.pk}",
        metadata={"providers": ["anthropic"]},
        request=request,
    )
    caller = re.search(r'<div id="run-caller">(.*?)</div>', _detail(acme, run), re.S).group(1)
    assert "<code>203.0.113.9</code>" in caller
    assert "swrly-cli/1.4 xxx" in caller
    assert "x" * 250 not in caller  # cut to a sane length
    assert 'id="run-caller"' not in _detail(acme, run, Role.DEVELOPER)  # no audit log for them


def test_an_older_run_without_a_recorded_caller_shows_dashes(acme):
    run = make_run(acme, events=True)
    caller = re.search(r'<div id="run-caller">(.*?)</div>', _detail(acme, run), re.S).group(1)
    assert caller.count("—") == 2


def test_each_key_shows_its_destination_host(acme):
    run = make_run(acme, events=True)
    _, text = _store_line(_detail(acme, run))
    assert '<code class="key-destination">api.anthropic.com</code>' in text


def test_key_timeline_times_carry_milliseconds_in_text_and_datetime(acme):
    run = make_run(acme, events=True)
    html = _detail(acme, run)
    section = re.search(r'<section id="key-timeline".*?</section>', html, re.S).group(0)
    times = re.findall(r'<time datetime="([^"]+)" title="[^"]+">([^<]+)</time>', section)
    assert times
    for stamp, text in times:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
        assert text == stamp.replace("T", " ").replace("Z", " UTC")
    facts = re.search(r'<dl class="facts".*?</dl>', html, re.S).group(0)
    assert re.search(r'<time datetime="[^".]+Z"', facts)  # elsewhere, still whole seconds


def test_a_running_step_is_labelled_streaming_only_while_output_arrives(acme):
    run = make_run(acme, status=RunStatus.RUNNING, steps=1)
    step = StepRun.objects.get(run=run)
    StepRun.objects.filter(pk=step.pk).update(status=StepStatus.RUNNING, output_text="")
    assert "streaming: what has arrived" not in _detail(acme, run, Role.DEVELOPER)  # no stream
    StepRun.objects.filter(pk=step.pk).update(output_text="The first words ", ttft_ms=412)
    html = _detail(acme, run, Role.DEVELOPER)
    assert "streaming: what has arrived so far" in html
    assert "first text 412 ms" in html
    assert "The first words" in html
