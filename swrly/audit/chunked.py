"""Reading a long ordered result in chunks by keyset, one short query per chunk.

`QuerySet.iterator()` on PostgreSQL declares a server-side cursor (`WITH HOLD` outside a
transaction) and fetches from it for as long as the caller iterates: through a streamed
download, for the whole download. Behind PgBouncer in transaction mode the cursor lives on
whichever server connection declared it, and the next fetch may land on another one ("cursor
does not exist"); with `DISABLE_SERVER_SIDE_CURSORS` it would instead load the whole result into
memory. Here each chunk is its own `… WHERE key > last ORDER BY key LIMIT n` statement: nothing
is held between chunks, so a slow reader holds neither a cursor nor a pooled connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)

CHUNK_SIZE = 2000


def in_chunks(queryset: QuerySet[M], *, key: str = "seq", size: int | None = None) -> Iterator[M]:
    """The rows of `queryset` in ascending `key` order, fetched `size` at a time.

    `key` must be unique within the queryset (an audit chain's `seq` is): the next chunk starts
    after the last key seen, so a row is never read twice or skipped. The chunks are separate
    statements, not one snapshot: the callers bound their range (`seq__lt=…`) where it matters.
    `size` defaults to CHUNK_SIZE, read at each call (tests make it small).
    """
    size = size or CHUNK_SIZE
    ordered = queryset.order_by(key)
    last: object = None
    while True:
        page = ordered if last is None else ordered.filter(**{f"{key}__gt": last})
        rows = list(page[:size])
        yield from rows
        if len(rows) < size:
            return
        last = getattr(rows[-1], key)
