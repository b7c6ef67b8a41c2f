"""Tampering with the audit log as a database attacker: every case is detected and named.

On PostgreSQL each case runs twice: as a least-privileged application role (CONNECT; SELECT and
INSERT on audit events and checkpoints; UPDATE on the chain head only — docs/operations.md) and as
the tables' owner, who can switch the append-only triggers off. On SQLite, as whoever can write
the file. The attacker never has AUDIT_CHAIN_KEY or the current AUDIT_SIGNING_KEY.
"""

import base64
import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from swrly.audit.checkpoints import audit_checkpoint_chain
from swrly.audit.keys import chain_keyring, public_key_of, signing_key_id
from swrly.audit.models import AuditCheckpoint, AuditEvent
from swrly.audit.verifier import audit_verify_chain, checkpoint_payload
from swrly.audit.writer import Actor, audit_record, chain_for, event_hash
from swrly.keys.keyring import generate_key
from tenants.models import Tenant

pytestmark = pytest.mark.usefixtures("audit_test_event")

SYSTEM = Actor.system("tests")
POSTGRES = connection.vendor == "postgresql"
ATTACKERS = ["app_role", "table_owner"] if POSTGRES else ["file_writer"]
AUDIT_TABLES = ("tenants_auditevent", "tenants_auditcheckpoint")


@dataclass
class Attacker:
    kind: str
    cursor: Any

    @property
    def can_rewrite(self) -> bool:
        return self.kind != "app_role"

    def run(self, sql: str, params: list | None = None) -> bool:
        """Run one statement; False when the database refused it."""
        try:
            with transaction.atomic():
                self.cursor.execute(sql, params or [])
        except DatabaseError:
            return False
        return True


@contextmanager
def attacker(kind: str):
    with connection.cursor() as cursor:
        if kind == "app_role":
            role = f"swrly_audit_app_{uuid.uuid4().hex[:12]}"
            database = connection.settings_dict["NAME"]
            cursor.execute(f"CREATE ROLE {role} NOLOGIN")
            cursor.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
            cursor.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            cursor.execute(f"GRANT SELECT, INSERT ON {', '.join(AUDIT_TABLES)} TO {role}")
            cursor.execute(f"GRANT SELECT, UPDATE ON tenants_auditchainhead TO {role}")
            cursor.execute(f"GRANT SELECT ON tenants_tenant TO {role}")
            cursor.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
            cursor.execute(f"SET ROLE {role}")
        elif kind == "table_owner":
            # (ALTER TABLE waits for no deferred foreign-key check of this transaction)
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            for table in AUDIT_TABLES:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            yield Attacker(kind, cursor)
        finally:
            if kind == "app_role":
                cursor.execute("RESET ROLE")
            elif kind == "table_owner":
                for table in AUDIT_TABLES:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")


@pytest.fixture
def chain(db):
    """Events #1-#4, a signed checkpoint at #4, its audit.checkpoint event #5, events #6-#8."""
    tenant = Tenant.objects.create(slug="chain", name="Chain")
    _record(tenant, 4)
    checkpoint = audit_checkpoint_chain(chain_for(tenant))
    assert checkpoint is not None
    assert checkpoint.seq == 4
    _record(tenant, 3)
    assert _verify(tenant).ok
    assert _verify(tenant, full=True).ok
    return tenant


def _record(tenant, n):
    return [
        audit_record(tenant=tenant, action="test.event", actor=SYSTEM, metadata={"i": i})
        for i in range(n)
    ]


def _verify(tenant, *, full=False):
    return audit_verify_chain(chain_for(tenant), full=full)


def _event(tenant, seq):
    return AuditEvent.objects.get(chain=chain_for(tenant), seq=seq)


def _forged_fields(tenant, *, seq, prev_hash, version, key=None, key_id=""):
    fields = {
        "chain": chain_for(tenant),
        "seq": seq,
        "created_at": timezone.now().replace(microsecond=123456),
        "actor": "system:tests",
        "actor_user_id": None,
        "action": "key.deposited",
        "target": "run:forged",
        "metadata": {"forged": True},
        "ip": None,
        "user_agent": "",
        "prev_hash": prev_hash,
        "hash_version": version,
        "key_id": key_id,
    }
    fields["hash"] = event_hash(**fields, chain_key=key)
    return fields


def _insert_event(attacker, tenant, fields) -> bool:
    row = {
        **fields,
        "tenant_id": tenant.pk.hex,
        "created_at": connection.ops.adapt_datetimefield_value(fields["created_at"]),
        "metadata": json.dumps(fields["metadata"]),
    }
    columns = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    return attacker.run(
        f"INSERT INTO tenants_auditevent ({columns}) VALUES ({marks})",  # noqa: S608
        list(row.values()),
    )


def _move_head(attacker, tenant, seq, last_hash) -> bool:
    return attacker.run(
        "UPDATE tenants_auditchainhead SET seq = %s, last_hash = %s WHERE chain = %s",
        [seq, last_hash, chain_for(tenant)],
    )


def _insert_checkpoint(attacker, tenant, *, seq, head_hash, prev_signature, private, key_id=None):
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    fields = {
        "chain": chain_for(tenant),
        "tenant_id": tenant.pk,
        "seq": seq,
        "head_hash": head_hash,
        "created_at": timezone.now(),
        "prev_signature": prev_signature,
        "key_id": key_id or signing_key_id(public),
    }
    signature = private.sign(checkpoint_payload(**fields)).hex()
    row = {
        **fields,
        "tenant_id": tenant.pk.hex,
        "created_at": connection.ops.adapt_datetimefield_value(fields["created_at"]),
        "signature": signature,
    }
    columns = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    return attacker.run(
        f"INSERT INTO tenants_auditcheckpoint ({columns}) VALUES ({marks})",  # noqa: S608
        list(row.values()),
    )


# --- appending ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ATTACKERS)
def test_a_forged_event_with_a_recomputed_plain_sha256_is_named(chain, kind):
    last = _event(chain, 8)
    fields = _forged_fields(chain, seq=9, prev_hash=last.hash, version=1)
    with attacker(kind) as db:
        assert _insert_event(db, chain, fields)
        assert _move_head(db, chain, 9, fields["hash"])
    forged = _event(chain, 9)
    # the plain SHA-256 is right: only the key tells it apart
    assert forged.hash == fields["hash"]
    for full in (False, True):
        report = _verify(chain, full=full)
        assert not report.ok
        assert (report.broken_seq, report.broken_event_id) == (9, forged.pk)
        assert "written without the chain key" in report.reason


@pytest.mark.parametrize("kind", ATTACKERS)
def test_a_forged_v2_event_under_a_guessed_key_is_named(chain, kind):
    last = _event(chain, 8)
    real_key_id = chain_keyring().current_id
    guessed = base64.urlsafe_b64decode(generate_key())
    fields = _forged_fields(
        chain, seq=9, prev_hash=last.hash, version=2, key=guessed, key_id=real_key_id
    )
    with attacker(kind) as db:
        assert _insert_event(db, chain, fields)
        assert _move_head(db, chain, 9, fields["hash"])
    report = _verify(chain)
    assert not report.ok
    assert (report.broken_seq, report.broken_event_id) == (9, _event(chain, 9).pk)
    assert "content does not match its hash" in report.reason


@pytest.mark.parametrize("kind", ATTACKERS)
def test_a_forged_checkpoint_appended_after_the_real_one_is_named(chain, kind):
    real = AuditCheckpoint.objects.get(chain=chain_for(chain))
    with attacker(kind) as db:
        assert _insert_checkpoint(
            db,
            chain,
            seq=8,
            head_hash=_event(chain, 8).hash,
            prev_signature=real.signature,
            private=Ed25519PrivateKey.generate(),
        )
    forged = AuditCheckpoint.objects.get(chain=chain_for(chain), seq=8)
    report = _verify(chain)
    assert not report.ok
    assert (report.broken_checkpoint_seq, report.broken_checkpoint_id) == (8, forged.pk)
    assert "not a published key" in report.reason
    assert report.checkpoints_verified == 1


# --- rewriting (the owner can; the application role is refused) -------------------------------


@pytest.mark.parametrize("kind", ATTACKERS)
def test_an_altered_event_after_the_checkpoint_is_named(chain, kind):
    victim = _event(chain, 7)
    with attacker(kind) as db:
        changed = db.run(
            "UPDATE tenants_auditevent SET metadata = %s WHERE id = %s",
            ['{"i": 99}', victim.pk],
        )
    assert changed == db.can_rewrite
    report = _verify(chain)
    if not changed:
        assert report.ok
        return
    assert not report.ok
    assert (report.broken_seq, report.broken_event_id) == (7, victim.pk)
    assert "altered" in report.reason


@pytest.mark.parametrize("kind", ATTACKERS)
def test_an_altered_event_before_the_checkpoint_is_named_by_a_full_verification(chain, kind):
    victim = _event(chain, 2)
    with attacker(kind) as db:
        changed = db.run(
            "UPDATE tenants_auditevent SET target = %s WHERE id = %s", ["run:other", victim.pk]
        )
    assert changed == db.can_rewrite
    if not changed:
        assert _verify(chain, full=True).ok
        return
    # incremental verification starts at the checkpoint and says so
    incremental = _verify(chain)
    assert incremental.ok
    assert (incremental.from_seq, incremental.to_seq, incremental.checkpoint.seq) == (4, 8, 4)
    full = _verify(chain, full=True)
    assert not full.ok
    assert (full.broken_seq, full.broken_event_id) == (2, victim.pk)
    # a later break (here the signed event too) does not hide the first one
    with attacker(kind) as db:
        assert db.run(
            "UPDATE tenants_auditevent SET target = %s WHERE id = %s",
            ["run:other", _event(chain, 4).pk],
        )
    assert not _verify(chain).ok
    assert _verify(chain, full=True).broken_seq == 2
    with pytest.raises(CommandError, match="broken"):
        call_command("verify-audit", "--tenant", "chain", "--full")


@pytest.mark.parametrize("kind", ATTACKERS)
def test_an_event_signed_by_a_checkpoint_cannot_be_rewritten_with_its_hash(chain, kind):
    """Rewriting the checkpointed event and recomputing its (v2) hash without the key."""
    victim = _event(chain, 4)
    guessed = base64.urlsafe_b64decode(generate_key())
    fields = _forged_fields(chain, seq=4, prev_hash=victim.prev_hash, version=2, key=guessed)
    with attacker(kind) as db:
        changed = db.run(
            "UPDATE tenants_auditevent SET action = %s, hash = %s WHERE id = %s",
            ["forged", fields["hash"], victim.pk],
        )
    assert changed == db.can_rewrite
    if changed:
        report = _verify(chain)
        assert not report.ok
        assert (report.broken_seq, report.broken_event_id) == (4, victim.pk)
        assert "does not match its signed checkpoint" in report.reason
        full = _verify(chain, full=True)
        assert not full.ok
        assert (full.broken_seq, full.broken_event_id) == (4, victim.pk)


@pytest.mark.parametrize("kind", ATTACKERS)
def test_a_deleted_tail_is_named_even_when_the_head_is_rewound(chain, kind):
    seventh = _event(chain, 7)
    with attacker(kind) as db:
        deleted = db.run(
            "DELETE FROM tenants_auditevent WHERE seq > %s AND chain = %s", [7, chain_for(chain)]
        )
        assert deleted == db.can_rewrite
        if not deleted:
            assert _verify(chain).ok
            return
        report = _verify(chain)
        assert not report.ok
        assert report.broken_seq == 8
        assert "removed from the end" in report.reason
        # the attacker also rewinds the chain head to the new last event
        assert _move_head(db, chain, 7, seventh.hash)
    report = _verify(chain)
    assert not report.ok
    assert report.broken_seq == 8
    assert "MAC does not verify" in report.reason


@pytest.mark.parametrize("kind", ATTACKERS)
def test_a_tail_cut_before_the_checkpoint_is_named(chain, kind):
    third = _event(chain, 3)
    with attacker(kind) as db:
        deleted = db.run(
            "DELETE FROM tenants_auditevent WHERE seq > %s AND chain = %s", [3, chain_for(chain)]
        )
        if deleted:
            assert _move_head(db, chain, 3, third.hash)
    assert deleted == db.can_rewrite
    if deleted:
        report = _verify(chain)
        assert not report.ok
        assert report.broken_seq == 4
        assert "the event signed by the checkpoint at #4 is missing" in report.reason
        full = _verify(chain, full=True)
        assert not full.ok
        assert full.broken_seq == 4
        assert "the event signed by the checkpoint at #4 is missing" in full.reason


@pytest.mark.parametrize("kind", ATTACKERS)
def test_reordered_events_are_named(chain, kind):
    sixth, seventh = _event(chain, 6), _event(chain, 7)
    with attacker(kind) as db:
        swapped = (
            db.run("UPDATE tenants_auditevent SET seq = -1 WHERE id = %s", [sixth.pk])
            and db.run("UPDATE tenants_auditevent SET seq = 6 WHERE id = %s", [seventh.pk])
            and db.run("UPDATE tenants_auditevent SET seq = 7 WHERE id = %s", [sixth.pk])
        )
    assert swapped == db.can_rewrite
    report = _verify(chain)
    if swapped:
        assert not report.ok
        assert (report.broken_seq, report.broken_event_id) == (6, seventh.pk)
    else:
        assert report.ok


@pytest.mark.parametrize("kind", ATTACKERS)
@pytest.mark.parametrize("forgery", ["own_key", "published_key_id"])
def test_a_replaced_checkpoint_is_named(chain, kind, forgery):
    real = AuditCheckpoint.objects.get(chain=chain_for(chain))
    key_id = real.key_id if forgery == "published_key_id" else None
    with attacker(kind) as db:
        replaced = db.run("DELETE FROM tenants_auditcheckpoint WHERE id = %s", [real.pk])
        if replaced:
            # a checkpoint over a rewritten head, signed by a key that is not Swrly's
            assert _insert_checkpoint(
                db,
                chain,
                seq=4,
                head_hash="f" * 64,
                prev_signature="",
                private=Ed25519PrivateKey.generate(),
                key_id=key_id,
            )
    assert replaced == db.can_rewrite
    report = _verify(chain)
    if not replaced:
        assert report.ok
        return
    forged = AuditCheckpoint.objects.get(chain=chain_for(chain), seq=4)
    assert not report.ok
    assert (report.broken_checkpoint_seq, report.broken_checkpoint_id) == (4, forged.pk)
    expected = "not a published key" if key_id is None else "signature does not verify"
    assert expected in report.reason


@pytest.mark.parametrize("kind", ATTACKERS)
def test_a_deleted_checkpoint_is_named_by_the_event_that_recorded_it(chain, kind):
    real = AuditCheckpoint.objects.get(chain=chain_for(chain))
    with attacker(kind) as db:
        deleted = db.run("DELETE FROM tenants_auditcheckpoint WHERE id = %s", [real.pk])
    assert deleted == db.can_rewrite
    report = _verify(chain)
    if deleted:
        recorded = _event(chain, 5)
        assert recorded.action == "audit.checkpoint"
        assert not report.ok
        assert (report.broken_seq, report.broken_event_id) == (5, recorded.pk)
        assert "checkpoint at #4 that is missing" in report.reason


@pytest.mark.parametrize("kind", ATTACKERS)
def test_a_checkpoint_signed_with_a_retired_key_is_named(chain, kind, settings):
    # given a signing-key rotation: the old key retired (its public half still published)
    old_private = settings.AUDIT_SIGNING_KEY
    new_private = generate_key()
    settings.AUDIT_SIGNING_KEY = new_private
    settings.AUDIT_SIGNING_KEY_FALLBACKS = [public_key_of(old_private)]
    newer = audit_checkpoint_chain(chain_for(chain), force=True)
    assert newer.key_id != AuditCheckpoint.objects.get(chain=chain_for(chain), seq=4).key_id
    assert _verify(chain).ok  # the old key's checkpoint still verifies
    head = _event(chain, newer.seq + 1)
    # when someone holding the retired private key signs a checkpoint after the new key's
    retired = Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(old_private))
    with attacker(kind) as db:
        assert _insert_checkpoint(
            db,
            chain,
            seq=head.seq,
            head_hash=head.hash,
            prev_signature=newer.signature,
            private=retired,
        )
    forged = AuditCheckpoint.objects.get(chain=chain_for(chain), seq=head.seq)
    report = _verify(chain)
    assert not report.ok
    assert (report.broken_checkpoint_seq, report.broken_checkpoint_id) == (head.seq, forged.pk)
    assert "signed by retired key" in report.reason
    assert report.checkpoints_verified == 2


@pytest.mark.skipif(not POSTGRES, reason="privileges and triggers are PostgreSQL's")
def test_a_least_privileged_role_cannot_touch_checkpoints(chain):
    real = AuditCheckpoint.objects.get(chain=chain_for(chain))
    with attacker("app_role") as db:
        assert not db.run("UPDATE tenants_auditcheckpoint SET seq = 3 WHERE id = %s", [real.pk])
        assert not db.run("DELETE FROM tenants_auditcheckpoint WHERE id = %s", [real.pk])
    # and the owner's own session is refused by the trigger unless it switches it off
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        connection.cursor().execute("DELETE FROM tenants_auditcheckpoint WHERE id = %s", [real.pk])
    assert _verify(chain, full=True).ok
