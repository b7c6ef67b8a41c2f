"""The evidence bundle: one zip of a tenant's audit events, checkpoints, keys and runs for a
period, with a manifest of every file's SHA-256 signed by the audit signing key (Ed25519).

Streamed: the zip is written entry by entry into a small buffer that is handed out as it fills
(entries carry data descriptors, so no size is needed up front), and the events are read from
the database in chunks, so memory stays bounded whatever the period. The manifest, written
last, holds the hashes computed while streaming. `swrly/evidence/verify_evidence.py` checks a
bundle offline; docs/evidence.md describes both.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, IntegerField, Sum, Value
from django.db.models.functions import Greatest, TruncDate
from django.http import HttpRequest
from django.utils import timezone

from runs.models import Run, StepRun
from runs.providers.egress import Destination
from swrly.audit.chunked import in_chunks
from swrly.audit.export import event_record as audit_event_record
from swrly.audit.keys import AuditKeyError, chain_keyring, signing_keyring
from swrly.audit.models import AuditCheckpoint, AuditEvent
from swrly.audit.verifier import audit_verify_chain, stored_hash
from swrly.audit.writer import Actor, audit_record, chain_for
from swrly.custody.models import BlockedKey
from swrly.custody.selectors import key_rotations, provider_key_history
from tenants.access import scoped
from tenants.models import Tenant

FORMAT = "swrly-evidence"
FORMAT_VERSION = 1
EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
CHUNK = 64 * 1024
MIN_YEAR, MAX_YEAR = 1970, 9998


class EvidenceUnavailable(Exception):
    """This process cannot sign a bundle (no AUDIT_SIGNING_KEY here)."""


@dataclass(frozen=True)
class Period:
    """Whole UTC days, inclusive."""

    start: date
    end: date

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        """The first instant after the period."""
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)


class _Sink:
    """A write-only, unseekable file: zipfile streams into it and the generator drains it."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drain(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value else None


def _line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _json_file(body: Any) -> bytes:
    return (json.dumps(body, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def event_record(event: AuditEvent) -> dict[str, Any]:
    """Every field an event's hash covers, as the hash saw it, and the hash itself: the export's
    record plus the chain and the actor's user id."""
    return {**audit_event_record(event), "chain": event.chain, "actor_user_id": event.actor_user_id}


def checkpoint_record(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    return {
        "chain": checkpoint.chain,
        "tenant": str(checkpoint.tenant_id) if checkpoint.tenant_id is not None else None,
        "seq": checkpoint.seq,
        "head_hash": checkpoint.head_hash,
        "created_at": _iso(checkpoint.created_at),
        "prev_signature": checkpoint.prev_signature,
        "key_id": checkpoint.key_id,
        "signature": checkpoint.signature,
    }


def _public_keys() -> dict[str, Any]:
    return {
        "keys": [
            {
                "key_id": key.key_id,
                "algorithm": "Ed25519",
                "status": key.status,
                "public_key": key.public_key,
                "public_key_pem": key.pem,
            }
            for key in signing_keyring().public.values()
        ]
    }


def _rotations(tenant: Tenant, period: Period) -> list[dict[str, Any]]:
    return [
        {
            "id": str(rotation.id),
            "started_at": _iso(rotation.started_at),
            "finished_at": _iso(rotation.finished_at),
            "outcome": rotation.outcome,
            "from_key_ids": rotation.from_key_ids,
            "to_key_id": rotation.to_key_id,
            "rewrapped_in_tenant": rotation.tenant_rewrapped,  # type: ignore[attr-defined]
        }
        for rotation in reversed(key_rotations(tenant=tenant))
        if rotation.started_at < period.until
    ]


def _blocked_in_period(tenant: Tenant, period: Period) -> list[BlockedKey]:
    """The tenant's blocklist entries made before the period ended, oldest first."""
    return list(
        scoped(BlockedKey, tenant)
        .filter(created_at__lt=period.until)
        .order_by("created_at", "provider", "fingerprint")
    )


def _blocked(blocked: list[BlockedKey]) -> list[dict[str, Any]]:
    return [
        {
            "provider": entry.provider,
            "fingerprint": entry.fingerprint,
            "hint": entry.hint,
            "blocked_at": _iso(entry.created_at),
            "blocked_by": entry.created_by,
            "reason": entry.reason,
        }
        for entry in blocked
    ]


def _destinations(tenant: Tenant, period: Period) -> dict[str, Any]:
    """Where the keys went: per provider and destination, the steps and requests of the runs
    created in the period, counted as the run end events' `sent_to` counts them (a step's HTTP
    attempts, at least one once it has a destination)."""
    rows = (
        scoped(StepRun, tenant)
        .filter(run__created_at__gte=period.since, run__created_at__lt=period.until)
        .exclude(destination_host="")
        .exclude(destination_port=None)
        .values("provider", "destination_scheme", "destination_host", "destination_port")
        .annotate(
            steps=Count("id"),
            requests=Sum(Greatest("attempts", Value(1), output_field=IntegerField())),
        )
        .order_by()
    )
    totals: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        port = row["destination_port"]
        if port is None:  # excluded above; for the type checker
            continue
        origin = Destination(row["destination_scheme"], row["destination_host"], port).origin
        counts = totals.setdefault((row["provider"], origin), [0, 0])
        counts[0] += row["steps"]
        counts[1] += row["requests"]
    return {
        "by": "the steps of runs created in the period (UTC) that sent requests",
        "destinations": [
            {"provider": provider, "destination": origin, "steps": steps, "requests": requests}
            for (provider, origin), (steps, requests) in sorted(totals.items())
        ],
    }


def _provider_keys(
    tenant: Tenant, period: Period, blocked: list[BlockedKey]
) -> list[dict[str, Any]]:
    by_fingerprint = {(b.provider, b.fingerprint): b for b in blocked}
    rows = []
    for provider, keys in sorted(provider_key_history(tenant=tenant).items()):
        for row in keys.rows:
            key = row.key
            if key.first_seen_at >= period.until or key.last_seen_at < period.since:
                continue
            rows.append(
                {
                    "provider": provider,
                    "fingerprint": key.fingerprint,
                    "hint": key.hint,
                    "first_seen_at": _iso(key.first_seen_at),
                    "last_seen_at": _iso(key.last_seen_at),
                    "runs": row.run_count,
                    "replaced_by": row.replaced_by.fingerprint if row.replaced_by else None,
                    "used_after_replacement": row.used_after_replacement,
                    **_block_state(by_fingerprint.get((provider, key.fingerprint))),
                }
            )
    return rows


def _block_state(entry: BlockedKey | None) -> dict[str, Any]:
    return {
        "blocked": entry is not None,
        "blocked_at": _iso(entry.created_at) if entry else None,
        "blocked_reason": entry.reason if entry else None,
    }


def _runs_summary(tenant: Tenant, period: Period) -> dict[str, Any]:
    rows = (
        scoped(Run, tenant)
        .filter(created_at__gte=period.since, created_at__lt=period.until)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "status")
        .annotate(count=Count("id"))
        .order_by("day", "status")
    )
    days: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for row in rows:
        days.setdefault(row["day"].isoformat(), {})[row["status"]] = row["count"]
        totals[row["status"]] = totals.get(row["status"], 0) + row["count"]
    return {
        "by": "the run's created_at, UTC day",
        "days": [{"day": day, "by_status": counts} for day, counts in days.items()],
        "totals": totals,
    }


@dataclass
class _Written:
    name: str
    sha256: str
    size: int


class _EventCheck:
    """Recomputes every exported event's hash with the chain key while it streams."""

    def __init__(self) -> None:
        self.keyring = chain_keyring()
        self.recomputed = 0
        self.mismatched: list[int] = []

    def __call__(self, event: AuditEvent) -> None:
        expected = stored_hash(event, self.keyring) or ""
        if hmac.compare_digest(expected, event.hash):
            self.recomputed += 1
        elif len(self.mismatched) < 100:
            self.mismatched.append(event.seq)


def evidence_stream(
    *, tenant: Tenant, period: Period, generated_by: str, export_seq: int, generated_at: datetime
) -> Iterator[bytes]:
    """The bundle's bytes, chunk by chunk. Events are those of the tenant's chain in `period`
    recorded before the export's own event (`export_seq`)."""
    signing = signing_keyring()
    if signing.private is None:
        raise EvidenceUnavailable("AUDIT_SIGNING_KEY is not set here")
    chain = chain_for(tenant)
    sink = _Sink()
    written: list[_Written] = []
    check = _EventCheck()
    first_seq = last_seq = None
    count = 0
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED)

    def put(name: str, parts: Iterator[bytes], *, large: bool = False) -> Iterator[bytes]:
        digest, size = hashlib.sha256(), 0
        info = zipfile.ZipInfo(name, date_time=generated_at.astimezone(UTC).timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        with archive.open(info, "w", force_zip64=large) as entry:
            for part in parts:
                digest.update(part)
                size += len(part)
                entry.write(part)
                if len(sink.buffer) >= CHUNK:
                    yield sink.drain()
        written.append(_Written(name, digest.hexdigest(), size))
        yield sink.drain()

    def events() -> Iterator[bytes]:
        nonlocal first_seq, last_seq, count
        rows = scoped(AuditEvent, tenant).filter(
            chain=chain,
            created_at__gte=period.since,
            created_at__lt=period.until,
            seq__lt=export_seq,
        )
        for event in in_chunks(rows):  # by keyset: nothing held across chunks (PgBouncer)
            check(event)
            first_seq = event.seq if first_seq is None else first_seq
            last_seq = event.seq
            count += 1
            yield _line(event_record(event))

    def checkpoints() -> Iterator[bytes]:
        # Those signing an event of the period, and the one before it (which the first of them
        # chains, and which the period's first `audit.checkpoint` event may record).
        rows = scoped(AuditCheckpoint, tenant).filter(chain=chain).order_by("seq")
        if first_seq is None:
            return
        before = rows.filter(seq__lt=first_seq).order_by("-seq").first()
        if before is not None:
            yield _line(checkpoint_record(before))
        for checkpoint in in_chunks(rows.filter(seq__gte=first_seq, seq__lte=last_seq)):
            yield _line(checkpoint_record(checkpoint))

    yield from put(EVENTS, events(), large=True)
    yield from put(CHECKPOINTS, checkpoints())
    yield from put("public_keys.json", iter([_json_file(_public_keys())]))
    yield from put("key_rotations.json", iter([_json_file(_rotations(tenant, period))]))
    blocked = _blocked_in_period(tenant, period)
    yield from put(
        "provider_keys.json", iter([_json_file(_provider_keys(tenant, period, blocked))])
    )
    yield from put("blocked_keys.json", iter([_json_file(_blocked(blocked))]))
    yield from put("destinations.json", iter([_json_file(_destinations(tenant, period))]))
    yield from put("runs_summary.json", iter([_json_file(_runs_summary(tenant, period))]))

    report = audit_verify_chain(chain, full=False)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tenant": {"id": str(tenant.pk), "slug": tenant.slug, "name": tenant.name},
        "chain": chain,
        "period": {"from": period.start.isoformat(), "to": period.end.isoformat()},
        "generated_at": _iso(generated_at),
        "generated_by": generated_by,
        "export_event_seq": export_seq,
        "events": {"count": count, "first_seq": first_seq, "last_seq": last_seq},
        "files": [{"name": w.name, "sha256": w.sha256, "bytes": w.size} for w in written],
        "server_check": {
            "what": "each exported event's hash recomputed with the chain key (HMAC-SHA256 "
            "for version 2) at export, and the chain verified from its newest signed checkpoint",
            "events_recomputed": check.recomputed,
            "events_mismatched": check.mismatched,
            "chain_ok": report.ok,
            "chain_reason": report.reason,
        },
        "signing_key_id": signing.current.key_id,
    }
    manifest_bytes = _json_file(manifest)
    signature = signing.private.sign(manifest_bytes).hex()
    yield from put("manifest.json", iter([manifest_bytes]))
    yield from put(
        "manifest.sig",
        iter(
            [
                _json_file(
                    {
                        "algorithm": "Ed25519",
                        "key_id": signing.current.key_id,
                        "signature": signature,
                        "signs": "the exact bytes of manifest.json",
                    }
                )
            ]
        ),
    )
    archive.close()
    yield sink.drain()


@dataclass(frozen=True)
class EvidenceExport:
    filename: str
    chunks: Iterator[bytes]


def evidence_export(
    *,
    tenant: Tenant,
    period: Period,
    actor: Actor,
    via: str,
    request: HttpRequest | None = None,
) -> EvidenceExport:
    """Record `evidence.exported`, then return the bundle's name and its streamed bytes.

    Refuses (EvidenceUnavailable) before anything is recorded when this process cannot sign.
    """
    try:
        signing = signing_keyring()
    except AuditKeyError as exc:
        raise EvidenceUnavailable(str(exc)) from None
    if signing.private is None:
        raise EvidenceUnavailable("AUDIT_SIGNING_KEY is not set here: this process cannot sign")
    with transaction.atomic():
        exported = audit_record(
            tenant=tenant,
            action="evidence.exported",
            actor=actor,
            target=f"evidence:{period.start.isoformat()}..{period.end.isoformat()}",
            metadata={"from": period.start.isoformat(), "to": period.end.isoformat(), "via": via},
            request=request,
        )
    name = f"swrly-evidence-{tenant.slug}-{period.start.isoformat()}-{period.end.isoformat()}.zip"
    chunks = evidence_stream(
        tenant=tenant,
        period=period,
        generated_by=actor.label,
        export_seq=exported.seq,
        generated_at=timezone.now(),
    )
    return EvidenceExport(filename=name, chunks=chunks)


PeriodError = Callable[[str, str], Exception]


def parse_period(raw_from: str | None, raw_to: str | None, error: PeriodError) -> Period:
    """The period `from`..`to` (YYYY-MM-DD, UTC, inclusive); `error(field, message)` is raised
    for the first field that is missing or malformed, or `to` before `from`."""
    values: dict[str, date] = {}
    for field, raw in (("from", raw_from), ("to", raw_to)):
        if not raw:
            raise error(field, "required: a date, YYYY-MM-DD (UTC)")
        try:
            values[field] = date.fromisoformat(raw)
        except ValueError:
            raise error(field, "not a date: use YYYY-MM-DD (UTC)") from None
        if len(raw) != 10 or not MIN_YEAR <= values[field].year <= MAX_YEAR:
            raise error(field, f"not a date between {MIN_YEAR} and {MAX_YEAR}: use YYYY-MM-DD")
    if values["to"] < values["from"]:
        raise error("to", "before from")
    return Period(values["from"], values["to"])
