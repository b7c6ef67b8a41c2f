"""Streaming a tenant's audit chain to its own HTTPS endpoint (a SIEM), at least once, in order.

Each delivery is one POST of up to AUDIT_WEBHOOK_BATCH events, oldest first, starting after the
last event the receiver acknowledged with a 2xx: a body `{"tenant", "tenant_id", "webhook",
"events": [...]}` whose events carry their `seq` (the receiver drops any it has already
seen), signed in the `Swrly-Signature` header (`t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>." + body under the webhook's secret>`). A failed delivery (no answer, a timeout, a non-2xx
answer, a redirect, which is never followed, or an address the policy refuses) is tried again
after an exponential back-off; later events wait behind it, so the receiver never sees a gap.

The secret is sealed with AES-256-GCM under a key derived from SECRET_KEY (HKDF-SHA256, its own
label) and bound to the webhook's id; SECRET_KEY_FALLBACKS still open secrets sealed before a
rotation. This module imports no app: the webhook's tenant is reached through its foreign key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from swrly.audit.export import event_record
from swrly.audit.models import AuditChainHead, AuditEvent, AuditWebhook
from swrly.audit.webhook_policy import WebhookRefused, checked_address, parse_destination

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SIGNATURE_HEADER = "Swrly-Signature"
USER_AGENT = "Swrly-Audit-Webhook/1"
_HKDF_INFO = b"swrly.audit-webhook-secret.v1"


class WebhookSecretUnavailable(Exception):
    """A sealed secret that no configured SECRET_KEY opens (the key was retired)."""


# --- the secret -------------------------------------------------------------------------------


@cache
def _derived(secret_key: str) -> tuple[str, bytes]:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secret_key.encode()
    )
    return hashlib.sha256(b"swrly-webhook-key\0" + key).hexdigest()[:8], key


def _keys() -> list[tuple[str, bytes]]:
    return [_derived(k) for k in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS) if k]


def new_secret() -> str:
    """A fresh webhook secret: `whsec_` and 32 random bytes in urlsafe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _aad(webhook_id: Any) -> bytes:
    return f"swrly-audit-webhook\0{webhook_id}".encode()


def seal_secret(webhook_id: Any, secret: str) -> tuple[str, str]:
    """(key id, sealed secret) for storing: AES-256-GCM, random nonce, bound to the webhook."""
    key_id, key = _keys()[0]
    nonce = secrets.token_bytes(12)
    sealed = nonce + AESGCM(key).encrypt(nonce, secret.encode(), _aad(webhook_id))
    return key_id, base64.urlsafe_b64encode(sealed).decode("ascii")


def open_secret(webhook: AuditWebhook) -> str:
    """The webhook's secret, for signing a delivery only: never logged, rendered or returned."""
    for key_id, key in _keys():
        if key_id != webhook.secret_key_id:
            continue
        raw = base64.urlsafe_b64decode(webhook.secret_sealed.encode("ascii"))
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], _aad(webhook.pk)).decode()
        except InvalidTag:
            break
    raise WebhookSecretUnavailable(
        "the webhook's secret was sealed under a SECRET_KEY that is no longer configured"
    )


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body under the secret>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# --- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status: int | None
    error: str


@cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _post(url: str, body: bytes, headers: dict[str, str]) -> Attempt:
    """POST `body` to `url` at an address checked just now; never follows a redirect."""
    try:
        destination = parse_destination(url)
        address = checked_address(destination)
    except WebhookRefused as exc:
        return Attempt(False, None, f"refused: {exc}")
    host = f"[{address}]" if address.version == 6 else str(address)
    target = f"{destination.scheme}://{host}:{destination.port}{destination.path}"
    timeout = httpx.Timeout(
        settings.AUDIT_WEBHOOK_TIMEOUT, connect=min(5.0, settings.AUDIT_WEBHOOK_TIMEOUT)
    )
    request = httpx.Request(
        "POST",
        target,
        content=body,
        headers={**headers, "Host": destination.netloc},
        # TLS is for the host name (SNI and certificate), the connection for the checked address.
        extensions={"sni_hostname": destination.host, "timeout": timeout.as_dict()},
    )
    # The transport alone: no redirect handling at all, no proxy from the environment, and no
    # request log line (httpx's client logs the URL, whose query may hold a collector's token).
    transport = httpx.HTTPTransport(verify=_tls_context())
    try:
        response = transport.handle_request(request)
        status = response.status_code
        response.close()
    except httpx.TimeoutException as exc:
        return Attempt(False, None, f"no answer in time ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return Attempt(False, None, f"could not deliver ({type(exc).__name__})")
    finally:
        transport.close()
    if 200 <= status <= 299:
        return Attempt(True, status, "")
    if 300 <= status <= 399:
        return Attempt(False, status, f"answered {status}, a redirect (never followed)")
    return Attempt(False, status, f"answered {status}")


def backoff(failures: int) -> timedelta:
    """The wait after the `failures`-th failure in a row: base x 2^(failures - 1), capped."""
    base = settings.AUDIT_WEBHOOK_RETRY_BASE
    seconds = min(settings.AUDIT_WEBHOOK_RETRY_MAX, base * 2 ** min(failures - 1, 30))
    return timedelta(seconds=seconds)


def _lease(webhook_id: Any, now: datetime, *, due_only: bool) -> bool:
    """Take the webhook for one delivery round (a conditional update: one worker wins)."""
    lease = timedelta(seconds=2 * settings.AUDIT_WEBHOOK_TIMEOUT + 30)
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    rows = AuditWebhook.objects.filter(free, pk=webhook_id)
    if due_only:
        rows = rows.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    return rows.update(lease_until=now + lease) == 1


def body_for(webhook: AuditWebhook, events: list[AuditEvent]) -> bytes:
    tenant = webhook.tenant
    payload = {
        "tenant": tenant.slug,
        "tenant_id": str(tenant.pk),
        "webhook": str(webhook.pk),
        "events": [event_record(event) for event in events],
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def audit_webhook_deliver(
    webhook_id: Any, *, max_batches: int | None = None, due_only: bool = True
) -> int:
    """Deliver a webhook's pending events, batch by batch, until it is caught up, a delivery
    fails (it is then due again after the back-off) or `max_batches` were sent.

    Returns the events the receiver acknowledged. Nothing happens when another worker holds the
    webhook, or (`due_only`) when its next attempt is not due yet.
    """
    max_batches = max_batches or settings.AUDIT_WEBHOOK_MAX_BATCHES
    if not _lease(webhook_id, timezone.now(), due_only=due_only):
        return 0
    delivered = 0
    try:
        webhook = AuditWebhook.objects.select_related("tenant").get(pk=webhook_id)
        chain = str(webhook.tenant_id)
        try:
            secret = open_secret(webhook)
        except WebhookSecretUnavailable as exc:
            _failed(webhook, Attempt(False, None, str(exc)))
            return 0
        for _ in range(max_batches):
            events = list(
                AuditEvent.objects.filter(chain=chain, seq__gt=webhook.delivered_seq).order_by(
                    "seq"
                )[: settings.AUDIT_WEBHOOK_BATCH]
            )
            if not events:
                break
            body = body_for(webhook, events)
            now = timezone.now()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Swrly-Webhook-Id": str(webhook.pk),
                "Swrly-Seq": f"{events[0].seq}-{events[-1].seq}",
                SIGNATURE_HEADER: signature_header(secret, int(now.timestamp()), body),
            }
            # The lease covers one round trip; renew it for each batch.
            AuditWebhook.objects.filter(pk=webhook.pk).update(
                lease_until=now + timedelta(seconds=2 * settings.AUDIT_WEBHOOK_TIMEOUT + 30)
            )
            attempt = _post(webhook.url, body, headers)
            if not attempt.ok:
                _failed(webhook, attempt)
                break
            webhook.delivered_seq = events[-1].seq
            webhook.delivered_event_at = events[-1].created_at
            webhook.last_attempt_at = webhook.last_success_at = timezone.now()
            webhook.last_status = attempt.status
            webhook.last_error = ""
            webhook.failures = 0
            webhook.next_attempt_at = None
            delivered += len(events)
            if not _save_state(webhook):
                break
    finally:
        AuditWebhook.objects.filter(pk=webhook_id).update(lease_until=None)
    return delivered


_STATE_FIELDS = [
    "delivered_seq",
    "delivered_event_at",
    "last_attempt_at",
    "last_success_at",
    "last_status",
    "last_error",
    "failures",
    "next_attempt_at",
]


def _save_state(webhook: AuditWebhook) -> bool:
    """Store the delivery state; False when the webhook was deleted meanwhile (update(), not
    save(), so it stays deleted)."""
    updated: int = AuditWebhook.objects.filter(pk=webhook.pk).update(
        **{name: getattr(webhook, name) for name in _STATE_FIELDS}
    )
    return updated == 1


def _failed(webhook: AuditWebhook, attempt: Attempt) -> None:
    now = timezone.now()
    webhook.failures += 1
    webhook.last_attempt_at = now
    webhook.last_status = attempt.status
    webhook.last_error = attempt.error[:500]
    webhook.next_attempt_at = now + backoff(webhook.failures)
    _save_state(webhook)
    logger.warning(
        "audit webhook delivery failed",
        extra={"webhook": str(webhook.pk), "failures": webhook.failures, "error": attempt.error},
    )


def audit_webhooks_deliver_due() -> int:
    """Deliver every webhook that is due and has events waiting. Returns events delivered."""
    now = timezone.now()
    due = AuditWebhook.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    ).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    heads = dict(AuditChainHead.objects.values_list("chain", "seq"))
    delivered = 0
    for webhook_id, tenant_id, delivered_seq in due.values_list("pk", "tenant_id", "delivered_seq"):
        if heads.get(str(tenant_id), 0) > delivered_seq:
            delivered += audit_webhook_deliver(webhook_id)
    return delivered


# --- state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookState:
    head_seq: int
    lag_events: int
    lag_seconds: int  # how long the oldest event not yet delivered has waited (0: none)


def webhook_state(webhook: AuditWebhook) -> WebhookState:
    """How far behind the chain's head the webhook is, in events and in seconds."""
    chain = str(webhook.tenant_id)
    head = AuditChainHead.objects.filter(chain=chain).values_list("seq", flat=True).first() or 0
    lag = max(0, head - webhook.delivered_seq)
    seconds = 0
    if lag:
        oldest = (
            AuditEvent.objects.filter(chain=chain, seq=webhook.delivered_seq + 1)
            .values_list("created_at", flat=True)
            .first()
        )
        if oldest is not None:
            seconds = max(0, int((timezone.now() - oldest).total_seconds()))
    return WebhookState(head_seq=head, lag_events=lag, lag_seconds=seconds)
