"""The audit export: the events as CSV or JSON Lines, streamed row by row; the export itself
is audited first (`audit.exported`) and holds the events recorded before it.

The one implementation behind the audit page's download and `GET /api/v1/audit-events/export/`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import UTC
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse

from swrly.audit.chunked import in_chunks
from swrly.audit.models import AuditEvent
from swrly.audit.writer import Actor, audit_record

if TYPE_CHECKING:
    from tenants.models import Tenant

COLUMNS = (
    "seq",
    "created_at",
    "actor",
    "action",
    "target",
    "metadata",
    "ip",
    "user_agent",
    "prev_hash",
    "hash",
    "hash_version",
    "key_id",
)
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection). Such a
# cell is prefixed with an apostrophe in the CSV; the JSON Lines export keeps every value as
# stored, and is the one to verify hashes against.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def event_record(event: AuditEvent) -> dict[str, Any]:
    """An event as the export and the audit webhook send it (its `seq` and hash links too)."""
    return {
        "seq": event.seq,
        "created_at": event.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "metadata": event.metadata,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "hash_version": event.hash_version,
        "key_id": event.key_id,
    }


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class _Line:
    """A file-like object whose write() hands back the line csv.writer produced."""

    def write(self, value: str) -> str:
        return value


def csv_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """A header line, then one CSV line per event (metadata as compact JSON)."""
    writer = csv.writer(_Line())
    yield writer.writerow(COLUMNS)
    for event in events:
        record = event_record(event)
        record["metadata"] = json.dumps(record["metadata"], sort_keys=True, separators=(",", ":"))
        yield writer.writerow([_cell(record[column]) for column in COLUMNS])


def jsonl_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """One JSON object per line, per event."""
    for event in events:
        yield json.dumps(event_record(event), sort_keys=True, ensure_ascii=False) + "\n"


FORMATS = {
    "csv": ("text/csv; charset=utf-8", csv_lines),
    "jsonl": ("application/jsonl; charset=utf-8", jsonl_lines),
}


def audit_export(
    *,
    tenant: Tenant,
    events: QuerySet[AuditEvent],
    export_format: str,
    filters: dict[str, Any],
    actor: Actor,
    request: HttpRequest,
    via: str = "",
    stamped: bool = True,
) -> StreamingHttpResponse:
    """Record `audit.exported`, then stream `events` (the filtered log) recorded before it.

    `filters` is recorded as given; `via` names a channel other than the page ("api").
    The file is named for the tenant and, when `stamped`, the export's time.
    """
    content_type, lines = FORMATS[export_format]
    metadata: dict[str, Any] = {"format": export_format, "filters": filters}
    if via:
        metadata["via"] = via
    with transaction.atomic():
        exported = audit_record(
            tenant=tenant,
            action="audit.exported",
            actor=actor,
            target=f"audit:{export_format}",
            metadata=metadata,
            request=request,
        )
    # By keyset, chunk by chunk: no cursor or transaction is held while the client downloads.
    rows = in_chunks(events.filter(seq__lt=exported.seq))
    response = StreamingHttpResponse(lines(rows), content_type=content_type)
    name = f"swrly-audit-{tenant.slug}"
    if stamped:
        name += "-" + exported.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="{name}.{export_format}"'
    return response
