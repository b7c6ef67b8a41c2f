"""Writes of key custody: a customer key seen, an encryption-key rotation begun and finished."""

import uuid
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from swrly.audit.writer import Actor, audit_record
from swrly.custody.models import KeyRotation, KeyRotationTenant, ProviderKey, RotationOutcome
from tenants.models import Tenant


def key_rotation_start(*, actor: Actor, to_key_id: str) -> KeyRotation:
    """Record that a rotation began, so an interrupted one still shows in the history."""
    return KeyRotation.objects.create(
        started_at=timezone.now(), actor=actor.label, to_key_id=to_key_id
    )


@transaction.atomic
def key_rotation_finish(
    *, rotation: KeyRotation, report: Any, actor: Actor, interrupted: bool = False
) -> KeyRotation:
    """Record a rotation's counts and outcome, and audit it in every tenant it touched.

    `report` is a swrly.keys.rotation.RewrapReport, complete or (when interrupted) partial.
    """
    rotation.finished_at = timezone.now()
    rotation.from_key_ids = sorted(report.from_key_ids)
    rotation.scanned = report.scanned
    rotation.rewrapped = report.rewrapped
    rotation.already_consumed = report.already_consumed
    rotation.failed = report.failed
    succeeded = report.failed == 0 and not interrupted
    rotation.outcome = RotationOutcome.SUCCEEDED if succeeded else RotationOutcome.FAILED
    rotation.save()
    tenants = Tenant.objects.in_bulk(list(report.rewrapped_by_tenant))
    for tenant_id, count in sorted(report.rewrapped_by_tenant.items()):
        tenant = tenants.get(uuid.UUID(tenant_id))
        if tenant is None:  # a token of a tenant deleted since: nothing to record it in
            continue
        KeyRotationTenant.objects.create(rotation=rotation, tenant=tenant, rewrapped=count)
        audit_record(
            tenant=tenant,
            action="encryption_key.rotated",
            actor=actor,
            target=f"rotation:{rotation.pk}",
            metadata={
                "from_key_ids": rotation.from_key_ids,
                "to_key_id": rotation.to_key_id,
                "rewrapped": count,
            },
        )
    return rotation


def provider_key_seen(*, tenant: Tenant, provider: str, fingerprint: str, hint: str) -> None:
    """Count one use of a customer key (by fingerprint) for the tenant's key history.

    One statement (INSERT … ON CONFLICT DO UPDATE), atomic on its own: no row lock is held
    beyond it, so concurrent runs of the same key never wait for each other here.
    """
    now = timezone.now()
    fields = ProviderKey._meta
    q = connection.ops.quote_name
    table = q(fields.db_table)
    columns = ("id", "tenant_id", "provider", "fingerprint", "hint", "first_seen_at",
               "last_seen_at", "use_count")  # fmt: skip
    values = [
        fields.get_field("id").get_db_prep_value(uuid.uuid4(), connection),
        fields.get_field("tenant").get_db_prep_value(tenant.pk, connection),
        provider,
        fingerprint,
        hint,
        fields.get_field("first_seen_at").get_db_prep_value(now, connection),
        fields.get_field("last_seen_at").get_db_prep_value(now, connection),
        1,
    ]
    unique = ", ".join(q(name) for name in ("tenant_id", "provider", "fingerprint"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(q(c) for c in columns)}) "  # noqa: S608
            f"VALUES ({', '.join(['%s'] * len(columns))}) ON CONFLICT ({unique}) DO UPDATE SET "
            f"{q('last_seen_at')} = EXCLUDED.{q('last_seen_at')}, "
            f"{q('use_count')} = {table}.{q('use_count')} + 1",
            values,
        )
