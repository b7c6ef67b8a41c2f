"""Audit events as CSV or JSON Lines, produced row by row for a streamed download."""

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import UTC

from tenants.models import AuditEvent

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


def _record(event: AuditEvent) -> dict:
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
        record = _record(event)
        record["metadata"] = json.dumps(record["metadata"], sort_keys=True, separators=(",", ":"))
        yield writer.writerow([_cell(record[column]) for column in COLUMNS])


def jsonl_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """One JSON object per line, per event."""
    for event in events:
        yield json.dumps(_record(event), sort_keys=True, ensure_ascii=False) + "\n"
