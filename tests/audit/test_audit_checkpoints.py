"""Keyed chain, signed checkpoints, incremental verification, and the public signing keys."""

import base64
import io

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from swrly.audit.checkpoints import audit_checkpoint_chain
from swrly.audit.keys import chain_keyring, public_key_of, signing_keyring
from swrly.audit.models import AuditChainHead, AuditCheckpoint, AuditEvent
from swrly.audit.tasks import audit_checkpoint
from swrly.audit.verifier import audit_verify_chain, checkpoint_payload
from swrly.audit.writer import Actor, audit_record, chain_for, event_hash
from swrly.keys.keyring import generate_key
from tenants.models import Role, Tenant

pytestmark = pytest.mark.usefixtures("audit_test_event")

SYSTEM = Actor.system("tests")


def _record(tenant, n):
    return [
        audit_record(tenant=tenant, action="test.event", actor=SYSTEM, metadata={"i": i})
        for i in range(n)
    ]


def _run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def tenant(db):
    return Tenant.objects.create(slug="chain", name="Chain")


def test_new_events_are_hmac_chained_under_the_chain_key(tenant):
    (event,) = _record(tenant, 1)
    assert event.hash_version == 2
    assert event.key_id == chain_keyring().current_id
    assert len(event.key_id) == 8
    fields = {
        name: getattr(event, name)
        for name in [
            "chain",
            "seq",
            "created_at",
            "actor",
            "actor_user_id",
            "action",
            "target",
            "metadata",
            "ip",
            "user_agent",
            "prev_hash",
            "hash_version",
            "key_id",
        ]
    }
    assert event.hash == event_hash(**fields, chain_key=chain_keyring().current)
    # a plain SHA-256 (what anyone could compute) is not it
    assert event.hash != event_hash(**{**fields, "hash_version": 1})
    head = AuditChainHead.objects.get(chain=chain_for(tenant))
    assert head.mac


def test_v1_events_written_before_the_upgrade_keep_verifying(tenant):
    # given a chain of v1 events as the previous release wrote them (no key, no MAC on the head)
    chain = chain_for(tenant)
    prev = "0" * 64

    for seq in (1, 2):
        fields = {
            "chain": chain,
            "seq": seq,
            "created_at": timezone.now(),
            "actor": "system:old",
            "actor_user_id": None,
            "action": "test.old",
            "target": "",
            "metadata": {"seq": seq},
            "ip": None,
            "user_agent": "",
            "prev_hash": prev,
        }
        prev = event_hash(**fields)
        AuditEvent.objects.create(tenant=tenant, hash=prev, hash_version=1, **fields)
    AuditChainHead.objects.create(chain=chain, seq=2, last_hash=prev)
    assert audit_verify_chain(chain).ok
    # when the new release appends
    (new,) = _record(tenant, 1)
    # then the chain goes on keyed, and all of it verifies
    assert (new.seq, new.hash_version, new.prev_hash) == (3, 2, prev)
    report = audit_verify_chain(chain)
    assert report.ok
    assert report.checked == 3


def test_rotating_the_chain_key_keeps_old_events_verifying_while_the_old_key_is_a_fallback(
    tenant, settings
):
    old_events = _record(tenant, 2)
    old = settings.AUDIT_CHAIN_KEY
    settings.AUDIT_CHAIN_KEY = generate_key()
    settings.AUDIT_CHAIN_KEY_FALLBACKS = [old]
    (new,) = _record(tenant, 1)
    assert new.key_id != old_events[0].key_id
    assert audit_verify_chain(chain_for(tenant)).ok
    # without the old key, its events can no longer be checked, and verification says which
    settings.AUDIT_CHAIN_KEY_FALLBACKS = []
    report = audit_verify_chain(chain_for(tenant))
    assert not report.ok
    assert report.broken_seq == 1
    assert f"unknown chain key {old_events[0].key_id!r}" in report.reason


def test_a_checkpoint_signs_the_head_and_chains_the_previous_signature(tenant):
    chain = chain_for(tenant)
    _record(tenant, 3)
    first = audit_checkpoint_chain(chain)
    assert (first.seq, first.prev_signature) == (3, "")
    assert first.head_hash == AuditEvent.objects.get(chain=chain, seq=3).hash
    assert first.key_id == signing_keyring().current.key_id
    # the signature verifies with the published public key over the documented payload
    payload = checkpoint_payload(
        chain=chain,
        tenant_id=tenant.pk,
        seq=first.seq,
        head_hash=first.head_hash,
        created_at=first.created_at,
        prev_signature="",
        key_id=first.key_id,
    )
    Ed25519PublicKey.from_public_bytes(signing_keyring().current.raw).verify(
        bytes.fromhex(first.signature), payload
    )
    # it is recorded in the tenant's own chain
    recorded = AuditEvent.objects.get(chain=chain, seq=4)
    assert recorded.action == "audit.checkpoint"
    assert recorded.metadata["signature"] == first.signature
    assert recorded.metadata["seq"] == 3
    # nothing new but its own event: no new checkpoint
    assert audit_checkpoint_chain(chain) is None
    _record(tenant, 2)
    second = audit_checkpoint_chain(chain)
    assert (second.seq, second.prev_signature) == (6, first.signature)
    report = audit_verify_chain(chain, full=False)
    assert report.ok
    assert (report.from_seq, report.to_seq, report.checked) == (6, 7, 2)
    assert report.checkpoints_verified == 2
    assert report.checkpoint.seq == 6


def test_a_broken_chain_is_not_signed(tenant):
    events = _record(tenant, 3)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        cursor.execute("UPDATE tenants_auditevent SET target = 'x' WHERE id = %s", [events[1].pk])
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = origin")
    with pytest.raises(CommandError, match="not signed"):
        _run("audit-checkpoint")
    assert not AuditCheckpoint.objects.exists()


def test_the_command_and_the_beat_task_checkpoint_every_chain_with_new_events(acme, globex):
    out = _run("audit-checkpoint")
    assert "signed  acme: checkpoint at #" in out
    assert "signed  globex: checkpoint at #" in out
    assert "skip" in _run("audit-checkpoint")
    _record(acme.tenant, 1)
    assert audit_checkpoint() == 1  # the beat task's function: only acme has news
    forced = _run("audit-checkpoint", "--force")
    assert forced.count("signed ") == AuditChainHead.objects.count()
    entry = django_settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert entry["task"] == "swrly.audit.tasks.audit_checkpoint"
    assert entry["schedule"] == float(django_settings.AUDIT_CHECKPOINT_INTERVAL)


def test_generate_keys_prints_a_usable_set(db):
    lines = dict(
        line.split("  #")[0].split("=", 1)
        for line in _run("audit-checkpoint", "--generate-keys").splitlines()
    )
    assert len(base64.urlsafe_b64decode(lines["AUDIT_CHAIN_KEY"])) == 32
    assert public_key_of(lines["AUDIT_SIGNING_KEY"]) == lines["AUDIT_SIGNING_PUBLIC_KEY"]


def test_incremental_verification_reads_only_events_after_the_checkpoint(tenant):
    chain = chain_for(tenant)
    _record(tenant, 50)
    audit_checkpoint_chain(chain)
    _record(tenant, 3)
    with CaptureQueriesContext(connection) as queries:
        report = audit_verify_chain(chain, full=False)
    assert report.ok
    assert (report.mode, report.from_seq, report.to_seq, report.checked) == (
        "incremental",
        50,
        54,
        5,
    )
    assert len(queries) == 4  # checkpoints, anchored events, events since, head
    full = audit_verify_chain(chain, full=True)
    assert (full.mode, full.from_seq, full.to_seq, full.checked) == ("full", 1, 54, 54)


def test_the_verify_endpoint_states_what_it_verified(acme):
    audit_checkpoint_chain(chain_for(acme.tenant))
    _record(acme.tenant, 2)
    checkpoint = AuditCheckpoint.objects.get(chain=chain_for(acme.tenant))
    body = acme.api(Role.AUDITOR).get("/api/v1/audit-events/verify/").json()
    last = AuditEvent.objects.filter(tenant=acme.tenant).order_by("-seq").first().seq
    assert body["ok"] is True
    assert body["mode"] == "incremental"
    assert (body["verified_from_seq"], body["verified_to_seq"]) == (checkpoint.seq, last)
    assert body["checked"] == last - checkpoint.seq + 1
    assert body["checkpoint_seq"] == checkpoint.seq
    assert body["checkpoint_key_id"] == checkpoint.key_id
    assert body["checkpoint_signature"] == checkpoint.signature
    assert body["checkpoints_verified"] == 1
    assert body["broken_checkpoint_seq"] is None
    assert {"broken_seq", "broken_event_id", "reason"} <= set(body)


def test_the_audit_page_states_the_range_checkpoint_and_signer(acme):
    audit_checkpoint_chain(chain_for(acme.tenant))
    _record(acme.tenant, 1)
    checkpoint = AuditCheckpoint.objects.get(chain=chain_for(acme.tenant))
    client = acme.client(Role.AUDITOR)  # (signing in is itself an event)
    last = AuditEvent.objects.filter(tenant=acme.tenant).order_by("-seq").first().seq
    html = client.get("/t/acme/audit/").content.decode()
    assert f"Verified: events #{checkpoint.seq} to #{last}" in html
    assert f"covers events #1 to #{checkpoint.seq}" in html
    assert f"by key <code>{checkpoint.key_id}</code>" in html
    assert 'href="/api/v1/audit-keys/"' in html
    assert "chain of 1 checkpoint signature up to it" in html


def test_the_audit_page_names_a_broken_checkpoint(acme):
    checkpoint = audit_checkpoint_chain(chain_for(acme.tenant))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            "UPDATE tenants_auditcheckpoint SET head_hash = %s WHERE id = %s",
            ["e" * 64, checkpoint.pk],
        )
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = origin")
    html = acme.client(Role.AUDITOR).get("/t/acme/audit/").content.decode()
    assert f"BROKEN: checkpoint at #{checkpoint.seq} (id {checkpoint.pk})" in html
    assert "signature does not verify" in html
    with pytest.raises(CommandError, match="signature does not verify"):
        _run("verify-audit", "--tenant", "acme")


def test_verify_audit_says_what_it_verified(acme):
    audit_checkpoint_chain(chain_for(acme.tenant))
    out = _run("verify-audit", "--tenant", "acme")
    checkpoint = AuditCheckpoint.objects.get(chain=chain_for(acme.tenant))
    assert f"newest at #{checkpoint.seq} signed by key {checkpoint.key_id}" in out
    assert "[incremental]" in out
    assert "[full]" in _run("verify-audit", "--tenant", "acme", "--full")


def test_the_signing_keys_are_public_current_and_retired(acme, settings):
    old = settings.AUDIT_SIGNING_KEY
    settings.AUDIT_SIGNING_KEY = generate_key()
    settings.AUDIT_SIGNING_KEY_FALLBACKS = [public_key_of(old)]
    response = Client().get("/api/v1/audit-keys/")  # no token, no session
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert [(k["status"], k["public_key"]) for k in keys] == [
        ("current", public_key_of(settings.AUDIT_SIGNING_KEY)),
        ("retired", public_key_of(old)),
    ]
    assert all(k["algorithm"] == "Ed25519" for k in keys)
    assert keys[0]["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    # the same for every caller (it holds nothing of a tenant) and never a private key
    assert acme.api(Role.DEVELOPER).get("/api/v1/audit-keys/").json() == response.json()
    assert settings.AUDIT_SIGNING_KEY not in response.content.decode()
    assert old not in response.content.decode()
