"""Audit webhook delivery by a real maintenance worker process: the task is routed to the
maintenance queue, fails against a receiver answering 500, and delivers everything on retry."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from swrly.audit.models import AuditChainHead, AuditWebhook
from swrly.audit.tasks import deliver_audit_webhooks
from tenants.models import Role
from tests.audit.webhook_receiver import Receiver, signature_ok
from tests.runs.real_workers import wait_until, worker_env


@pytest.mark.django_db(transaction=True)
def test_the_maintenance_worker_delivers_and_retries(acme, key_store, broker, workers, settings):
    settings.AUDIT_WEBHOOK_ALLOW_PRIVATE = True
    receiver = Receiver(plan=["500"]).start()
    try:
        created = acme.api(Role.OWNER).post(
            reverse("api:audit-webhook-list"), {"url": receiver.url}, "application/json"
        )
        assert created.status_code == 201, created.content
        secret = created.json()["secret"]
        webhook = AuditWebhook.objects.get(pk=created.json()["id"])
        env = worker_env(
            broker_url=broker.url,
            provider_url="http://127.0.0.1:9",
            AUDIT_WEBHOOK_ALLOW_PRIVATE="True",
        )
        workers.worker(
            "maintenance", env, "--pool=threads", "--concurrency=1", "--queues=maintenance"
        )

        deliver_audit_webhooks.delay()
        wait_until(
            lambda: AuditWebhook.objects.get(pk=webhook.pk).failures == 1,
            timeout=45,
            what="the first delivery to fail",
            on_fail=workers.logs,
        )
        # the back-off has passed
        AuditWebhook.objects.filter(pk=webhook.pk).update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )
        deliver_audit_webhooks.delay()
        head = AuditChainHead.objects.get(chain=str(acme.tenant.pk)).seq
        wait_until(
            lambda: AuditWebhook.objects.get(pk=webhook.pk).delivered_seq == head,
            timeout=45,
            what="the retry to deliver every event",
            on_fail=workers.logs,
        )
        assert receiver.seqs_received() == list(range(1, head + 1))
        assert all(
            signature_ok(secret, d.headers["Swrly-Signature"], d.body) for d in receiver.deliveries
        )
        assert workers.dead() == {}, workers.logs()
    finally:
        receiver.stop()
