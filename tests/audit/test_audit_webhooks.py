"""Audit webhooks against a real receiver on loopback that fails on purpose: order, at least
once, no gap after recovery, signatures, redirects, the address policy and the secret."""

import itertools
import json
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from swrly.audit import webhook_policy, webhooks
from swrly.audit.models import AuditChainHead, AuditEvent, AuditWebhook
from swrly.audit.tasks import deliver_audit_webhooks
from swrly.audit.webhooks import (
    audit_webhook_deliver,
    audit_webhooks_deliver_due,
    backoff,
    open_secret,
    webhook_state,
)
from swrly.audit.writer import Actor, audit_record
from tenants.models import Role
from tests.audit.webhook_receiver import Receiver, certificate_authority, signature_ok


@pytest.fixture
def loopback(settings):
    """The operator's allowance that lets a webhook reach a receiver on loopback over http."""
    settings.AUDIT_WEBHOOK_ALLOW_PRIVATE = True
    settings.AUDIT_WEBHOOK_TIMEOUT = 0.5
    return settings


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def _create(world, url):
    response = world.api(Role.OWNER).post(
        reverse("api:audit-webhook-list"), {"url": url}, "application/json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    return AuditWebhook.objects.get(pk=body["id"]), body["secret"]


def _head(tenant):
    return AuditChainHead.objects.get(chain=str(tenant.pk)).seq


def _more_events(world, n):
    for i in range(n):
        audit_record(
            tenant=world.tenant,
            action="workflow.deleted",
            actor=Actor.system("tests"),
            target=f"workflow:{i}",
            metadata={"name": f"w{i}"},
        )


def test_every_event_arrives_in_order_signed_with_the_secret_shown_once(acme, loopback, receiver):
    webhook, secret = _create(acme, receiver.url)
    assert secret.startswith("whsec_")

    delivered = audit_webhook_deliver(webhook.pk)

    head = _head(acme.tenant)
    assert delivered == head
    assert receiver.seqs_received() == list(range(1, head + 1))
    for delivery in receiver.deliveries:
        assert signature_ok(secret, delivery.headers["Swrly-Signature"], delivery.body)
        assert not signature_ok("whsec_wrong", delivery.headers["Swrly-Signature"], delivery.body)
        assert delivery.headers["Swrly-Webhook-Id"] == str(webhook.pk)
        assert delivery.headers["Content-Type"] == "application/json"
        assert delivery.payload["tenant"] == "acme"
        assert delivery.payload["tenant_id"] == str(acme.tenant.pk)
    # the events are the chain's, hash links included
    events = [e for d in receiver.deliveries for e in d.payload["events"]]
    stored = list(AuditEvent.objects.filter(tenant=acme.tenant).order_by("seq"))
    assert [e["hash"] for e in events] == [e.hash for e in stored]
    assert all(a["prev_hash"] == b["hash"] for b, a in itertools.pairwise(events))
    assert events[-1]["action"] == "audit.webhook_created"
    webhook.refresh_from_db()
    assert (webhook.delivered_seq, webhook.failures, webhook.last_error) == (head, 0, "")
    assert webhook.last_status == 204
    assert webhook_state(webhook).lag_events == 0


def test_a_tampered_body_fails_the_signature(acme, loopback, receiver):
    webhook, secret = _create(acme, receiver.url)
    audit_webhook_deliver(webhook.pk)
    delivery = receiver.deliveries[0]
    tampered = delivery.body.replace(b'"seq":1,', b'"seq":7,')
    assert tampered != delivery.body
    assert not signature_ok(secret, delivery.headers["Swrly-Signature"], tampered)


def test_batches_are_consecutive_and_bounded(acme, loopback, receiver):
    loopback.AUDIT_WEBHOOK_BATCH = 3
    webhook, _ = _create(acme, receiver.url)
    _more_events(acme, 7)

    audit_webhook_deliver(webhook.pk)

    batches = [d.seqs for d in receiver.deliveries]
    assert all(1 <= len(b) <= 3 for b in batches)
    flat = [seq for batch in batches for seq in batch]
    assert flat == list(range(1, _head(acme.tenant) + 1))
    assert receiver.deliveries[0].headers["Swrly-Seq"] == "1-3"


def test_a_500_is_retried_after_a_back_off_and_nothing_is_skipped(acme, loopback, receiver):
    loopback.AUDIT_WEBHOOK_BATCH = 4
    webhook, _ = _create(acme, receiver.url)
    receiver.plan = ["ok", "500"]

    audit_webhook_deliver(webhook.pk)

    webhook.refresh_from_db()
    assert webhook.delivered_seq == 4
    assert (webhook.failures, webhook.last_status) == (1, 500)
    assert "500" in webhook.last_error
    assert webhook.next_attempt_at - webhook.last_attempt_at == backoff(1)
    # not due yet: the sweep leaves it alone
    assert audit_webhooks_deliver_due() == 0
    assert len(receiver.deliveries) == 2

    receiver.plan = ["500"]
    with time_machine.travel(webhook.next_attempt_at + timedelta(seconds=1)):
        assert audit_webhooks_deliver_due() == 0
        webhook.refresh_from_db()
        assert webhook.failures == 2
        assert webhook.next_attempt_at - webhook.last_attempt_at == backoff(2) == 2 * backoff(1)
    _more_events(acme, 5)
    with time_machine.travel(webhook.next_attempt_at + timedelta(seconds=1)):
        assert audit_webhooks_deliver_due() > 0

    webhook.refresh_from_db()
    head = _head(acme.tenant)
    assert (webhook.delivered_seq, webhook.failures, webhook.next_attempt_at) == (head, 0, None)
    assert receiver.seqs_received() == list(range(1, head + 1))
    # each retry sent the same first event again: the batch the receiver refused
    refused = [d.seqs[0] for d in receiver.deliveries if d.answered == "500"]
    assert refused == [5, 5]


def test_a_receiver_that_does_not_answer_in_time_gets_the_events_again(acme, loopback, receiver):
    webhook, _ = _create(acme, receiver.url)
    receiver.plan = ["slow"]

    audit_webhook_deliver(webhook.pk)

    webhook.refresh_from_db()
    assert webhook.delivered_seq == 0
    assert webhook.last_status is None
    assert "no answer in time" in webhook.last_error
    audit_webhook_deliver(webhook.pk, due_only=False)
    # at least once: the slow delivery's events came again; de-duplicated by seq, none missing
    head = _head(acme.tenant)
    assert receiver.deliveries[0].seqs == receiver.deliveries[1].seqs
    assert receiver.seqs_received() == list(range(1, head + 1))


def test_a_receiver_down_for_a_while_gets_everything_after_it_comes_back(acme, loopback, receiver):
    webhook, _ = _create(acme, receiver.url)
    audit_webhook_deliver(webhook.pk)
    first = _head(acme.tenant)
    receiver.stop()
    for _ in range(3):
        _more_events(acme, 4)
        audit_webhook_deliver(webhook.pk, due_only=False)
    webhook.refresh_from_db()
    assert webhook.failures == 3
    assert "could not deliver" in webhook.last_error
    assert webhook.delivered_seq == first
    state = webhook_state(webhook)
    assert state.lag_events == 12
    assert state.head_seq == first + 12

    receiver.start()  # the same port
    with time_machine.travel(webhook.next_attempt_at + timedelta(seconds=1)):
        deliver_audit_webhooks()  # the beat task

    webhook.refresh_from_db()
    assert webhook.delivered_seq == _head(acme.tenant) == first + 12
    assert receiver.seqs_received() == list(range(1, first + 13))
    assert webhook_state(webhook).lag_events == 0


def test_a_redirect_is_not_followed(acme, loopback, receiver):
    elsewhere = Receiver().start()
    try:
        receiver.redirect_to = elsewhere.url
        receiver.plan = ["redirect"]
        webhook, _ = _create(acme, receiver.url)

        audit_webhook_deliver(webhook.pk)

        assert elsewhere.deliveries == []
        webhook.refresh_from_db()
        assert webhook.last_status == 307
        assert "redirect" in webhook.last_error
        assert webhook.delivered_seq == 0
    finally:
        elsewhere.stop()


def test_a_webhook_held_by_another_worker_is_left_alone(acme, loopback, receiver):
    webhook, _ = _create(acme, receiver.url)
    AuditWebhook.objects.filter(pk=webhook.pk).update(
        lease_until=timezone.now() + timedelta(minutes=1)
    )
    assert audit_webhook_deliver(webhook.pk, due_only=False) == 0
    assert receiver.deliveries == []


def test_each_tenant_receives_only_its_own_chain(acme, globex, loopback, receiver):
    other = Receiver().start()
    try:
        _create(acme, receiver.url)
        _create(globex, other.url)
        deliver_audit_webhooks()
        acme_hashes = set(
            AuditEvent.objects.filter(tenant=acme.tenant).values_list("hash", flat=True)
        )
        received = {e["hash"] for d in other.deliveries for e in d.payload["events"]}
        assert received
        assert not received & acme_hashes
        assert {d.payload["tenant"] for d in other.deliveries} == {"globex"}
    finally:
        other.stop()


# --- the address policy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://siem.example/ingest",  # not https
        "http://127.0.0.1:8080/x",  # loopback http without the allowance
        "https://10.0.0.7/ingest",  # private
        "https://127.0.0.1/ingest",  # loopback
        "https://169.254.169.254/latest/meta-data/",  # link-local (cloud metadata)
        "https://[::ffff:127.0.0.1]/x",  # loopback, IPv4-mapped
        "https://[fe80::1]/x",  # link-local IPv6
        "https://user:pw@siem.example/x",  # credentials
        "https://siem.example/x#frag",
        "ftp://siem.example/x",
        "https:///nohost",
        "https://siem.example:99999/x",
        "not a url",
    ],
)
def test_the_api_refuses_urls_the_policy_does_not_allow(acme, settings, url):
    settings.DEBUG = False
    response = acme.api(Role.OWNER).post(
        reverse("api:audit-webhook-list"), {"url": url}, "application/json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["fields"]["url"]
    assert not AuditWebhook.objects.exists()


def test_allowed_and_denied_hosts(settings):
    settings.AUDIT_WEBHOOK_ALLOWED_HOSTS = [".siem.example", "collector.example"]
    settings.AUDIT_WEBHOOK_DENIED_HOSTS = ["bad.siem.example"]
    assert webhook_policy.parse_destination("https://in.siem.example/x").host == "in.siem.example"
    assert webhook_policy.parse_destination("https://collector.example/x").port == 443
    for url in (
        "https://bad.siem.example/x",
        "https://siem.example.evil.example/x",
        "https://other.example/x",
        "https://xcollector.example/x",
    ):
        with pytest.raises(webhook_policy.WebhookRefused):
            webhook_policy.parse_destination(url)


def test_a_host_that_resolves_to_a_private_address_is_refused_at_send_time(
    acme, settings, receiver, monkeypatch
):
    # created while the policy allowed it; the host now resolves to a private address
    settings.AUDIT_WEBHOOK_ALLOW_PRIVATE = True
    webhook, _ = _create(acme, f"https://siem.example:{receiver.port}/x")
    settings.AUDIT_WEBHOOK_ALLOW_PRIVATE = False
    settings.DEBUG = False
    monkeypatch.setattr(webhook_policy, "resolve", lambda host, port: ["8.8.8.8", "10.1.2.3"])

    audit_webhook_deliver(webhook.pk)

    webhook.refresh_from_db()
    assert webhook.last_error.startswith("refused: The address 10.1.2.3 is private")
    assert webhook.delivered_seq == 0
    assert receiver.deliveries == []


def test_the_connection_goes_to_the_address_that_was_checked(acme, loopback, receiver, monkeypatch):
    """DNS rebinding: the host is resolved once, checked, and that address is connected to."""
    answers = [["127.0.0.1"], ["10.9.9.9"]]  # a second lookup would answer something else
    monkeypatch.setattr(webhook_policy, "resolve", lambda host, port: answers.pop(0))
    webhook, _ = _create(acme, f"http://localhost:{receiver.port}/ingest")

    audit_webhook_deliver(webhook.pk, max_batches=1)

    assert len(answers) == 1  # resolved exactly once for the delivery
    (delivery,) = receiver.deliveries
    assert delivery.headers["Host"] == f"localhost:{receiver.port}"


@pytest.mark.parametrize("certified", ["siem.test", "other.test"])
def test_https_goes_to_the_checked_address_and_verifies_the_hosts_certificate(
    acme, settings, tmp_path, monkeypatch, certified
):
    """TLS is for the host name (SNI, certificate) while the connection goes to the address
    that was checked; a certificate for another name is refused."""
    server_tls, client_tls = certificate_authority(tmp_path, certified)
    receiver = Receiver(tls=server_tls).start()
    try:
        settings.AUDIT_WEBHOOK_ALLOW_PRIVATE = True
        monkeypatch.setattr(webhook_policy, "resolve", lambda host, port: ["127.0.0.1"])
        monkeypatch.setattr(webhooks, "_tls_context", lambda: client_tls)
        webhook, secret = _create(acme, f"https://siem.test:{receiver.port}/ingest")

        audit_webhook_deliver(webhook.pk)

        webhook.refresh_from_db()
        if certified == "siem.test":
            assert webhook.delivered_seq == _head(acme.tenant)
            assert receiver.deliveries[0].headers["Host"] == f"siem.test:{receiver.port}"
            assert signature_ok(
                secret,
                receiver.deliveries[0].headers["Swrly-Signature"],
                receiver.deliveries[0].body,
            )
        else:
            assert webhook.delivered_seq == 0
            assert webhook.last_error == "could not deliver (ConnectError)"
            assert receiver.deliveries == []
    finally:
        receiver.stop()


# --- the secret -----------------------------------------------------------------------------


def test_the_secret_is_shown_once_and_never_again(acme, loopback, receiver, captured):
    webhook, secret = _create(acme, receiver.url)
    audit_webhook_deliver(webhook.pk)
    receiver.plan = ["500"]
    _more_events(acme, 1)
    audit_webhook_deliver(webhook.pk, due_only=False)

    stored = AuditWebhook.objects.filter(pk=webhook.pk).values().get()
    assert secret not in json.dumps(stored, default=str)
    assert secret[10:] not in json.dumps(stored, default=str)
    seen = [
        acme.api(Role.OWNER).get(reverse("api:audit-webhook-list")).content,
        acme.api(Role.AUDITOR)
        .get(reverse("api:audit-webhook-detail", kwargs={"pk": webhook.pk}))
        .content,
        acme.client(Role.OWNER)
        .get(reverse("tenants:audit-webhook-list", kwargs={"tenant_slug": "acme"}))
        .content,
        acme.client(Role.AUDITOR)
        .get(reverse("tenants:audit-list", kwargs={"tenant_slug": "acme"}))
        .content,
        json.dumps(list(AuditEvent.objects.values("metadata", "target")), default=str).encode(),
        captured.getvalue().encode(),
        b"".join(d.body + json.dumps(d.headers).encode() for d in receiver.deliveries),
    ]
    for body in seen:
        assert secret.encode() not in body
        assert secret[10:].encode() not in body
    assert open_secret(webhook) == secret


def test_the_secret_survives_a_secret_key_rotation(acme, loopback, receiver, settings):
    webhook, secret = _create(acme, receiver.url)
    old = settings.SECRET_KEY
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 40
    settings.SECRET_KEY_FALLBACKS = [old]
    assert open_secret(webhook) == secret
    settings.SECRET_KEY_FALLBACKS = []
    audit_webhook_deliver(webhook.pk)
    webhook.refresh_from_db()
    assert "no longer configured" in webhook.last_error
    assert receiver.deliveries == []


# --- configuration: who may, what is audited --------------------------------------------------


def test_creating_and_deleting_are_audited_without_the_query_or_the_secret(acme, loopback):
    webhook, secret = _create(acme, "https://siem.example/in?token=collector-secret")
    created = AuditEvent.objects.get(tenant=acme.tenant, action="audit.webhook_created")
    assert created.metadata == {
        "url": "https://siem.example/in?…",
        "secret_prefix": secret[:10],
    }
    listed = acme.api(Role.AUDITOR).get(reverse("api:audit-webhook-list")).json()
    assert listed[0]["url"] == "https://siem.example/in?…"
    response = acme.api(Role.OWNER).delete(
        reverse("api:audit-webhook-detail", kwargs={"pk": webhook.pk})
    )
    assert response.status_code == 204
    deleted = AuditEvent.objects.get(tenant=acme.tenant, action="audit.webhook_deleted")
    assert deleted.metadata == {"url": "https://siem.example/in?…", "delivered_seq": 0}
    assert not AuditWebhook.objects.exists()


def test_a_tenant_has_a_bounded_number_of_webhooks(acme, loopback):
    loopback.AUDIT_WEBHOOK_MAX_PER_TENANT = 2
    _create(acme, "https://a.example/x")
    _create(acme, "https://b.example/x")
    response = acme.api(Role.OWNER).post(
        reverse("api:audit-webhook-list"), {"url": "https://c.example/x"}, "application/json"
    )
    assert response.status_code == 400


@pytest.mark.parametrize("role", [Role.ADMIN, Role.AUDITOR])
def test_only_an_owner_adds_on_the_page(acme, role):
    url = reverse("tenants:audit-webhook-add", kwargs={"tenant_slug": "acme"})
    response = acme.client(role).post(url, {"url": "https://siem.example/x"})
    assert response.status_code == 403
    listing = acme.client(role).get(
        reverse("tenants:audit-webhook-list", kwargs={"tenant_slug": "acme"})
    )
    assert listing.status_code == 200
    assert b"Add a webhook" not in listing.content
    assert not AuditWebhook.objects.exists()


def test_a_developer_does_not_see_the_page(acme):
    url = reverse("tenants:audit-webhook-list", kwargs={"tenant_slug": "acme"})
    assert acme.client(Role.DEVELOPER).get(url).status_code == 403


def test_the_owner_adds_on_the_page_sees_the_secret_once_and_the_state(acme, loopback, receiver):
    page = reverse("tenants:audit-webhook-list", kwargs={"tenant_slug": "acme"})
    add = reverse("tenants:audit-webhook-add", kwargs={"tenant_slug": "acme"})
    owner = acme.client(Role.OWNER)
    response = owner.post(add, {"url": receiver.url})
    assert response.status_code == 200
    webhook = AuditWebhook.objects.get()
    body = response.content.decode()
    secret = body.split('<code class="copy">')[1].split("</code>")[0]
    assert secret.startswith("whsec_")
    assert open_secret(webhook) == secret
    receiver.plan = ["500"]
    audit_webhook_deliver(webhook.pk)
    again = owner.get(page).content.decode()
    assert secret not in again
    assert "HTTP 500" in again
    assert f"up to #0 of #{_head(acme.tenant)}" in again
    refused = owner.post(add, {"url": "http://10.0.0.1/x"})
    assert b"https://" in refused.content
    assert AuditWebhook.objects.count() == 1


def test_the_owner_deletes_on_the_page(acme, loopback):
    webhook, _ = _create(acme, "https://siem.example/x")
    url = reverse(
        "tenants:audit-webhook-delete", kwargs={"tenant_slug": "acme", "webhook_id": webhook.pk}
    )
    assert acme.client(Role.ADMIN).post(url).status_code == 403
    assert acme.client(Role.OWNER).post(url).status_code == 302
    assert not AuditWebhook.objects.exists()


def test_the_task_runs_on_the_maintenance_queue_on_a_schedule(settings):
    name = "swrly.audit.tasks.deliver_audit_webhooks"
    assert settings.CELERY_TASK_ROUTES[name] == {"queue": settings.MAINTENANCE_QUEUE}
    schedule = settings.CELERY_BEAT_SCHEDULE["deliver-audit-webhooks"]
    assert schedule["task"] == name
