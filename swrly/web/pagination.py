"""One keyset pagination, newest first, for every list: the API's and the pages'.

A list is ordered by a Keyset: one or two columns, descending, the last one unique (`pk`,
`seq`). A page is the rows past a position (the keys of the row at the page's edge), selected
with a predicate the index bounds: for (a, b), `a <= X AND (a < X OR b < Y)`. The plain
`a < X OR (a = X AND b < Y)` makes PostgreSQL read the index from the start and filter every
newer row away, so a deep page would cost the rows before it. Pages are stable under
concurrent inserts and cost one query, however deep.

The API answers with DRF's cursor shape (`next`, `previous`, `results`) through
KeysetPagination; a page view calls keyset_page() and links to `Keyset.encode(page.next)`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Field, Model, Q, QuerySet
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from swrly.input_limits import is_unstorable

if TYPE_CHECKING:  # rest_framework.views imports the API settings' classes
    from rest_framework.views import APIView

M = TypeVar("M", bound=Model)

_MAX_CURSOR = 200
_OLDER, _NEWER = "o", "n"


@dataclass(frozen=True)
class Cursor:
    """A position in a list and the direction to read from it: older rows, or (reverse) newer."""

    position: tuple[Any, ...]
    reverse: bool = False


@dataclass
class KeysetPage(Generic[M]):
    rows: list[M]
    next: Cursor | None  # the older rows, when there are any
    previous: Cursor | None  # the newer rows, when the page did not start at the newest


class Keyset:
    """The order of a list, newest first: one or two fields, the last one unique."""

    def __init__(self, *fields: str) -> None:
        if not 1 <= len(fields) <= 2:
            raise ValueError("a keyset is one or two fields")
        self.fields = fields

    def ordering(self, *, reverse: bool = False) -> list[str]:
        return [name if reverse else f"-{name}" for name in self.fields]

    def position_of(self, row: Model) -> tuple[Any, ...]:
        return tuple(getattr(row, name) for name in self.fields)

    def past(self, queryset: QuerySet[M], cursor: Cursor) -> QuerySet[M]:
        """The rows past `cursor` in its direction, with a predicate the index bounds."""
        op, op_eq = ("gt", "gte") if cursor.reverse else ("lt", "lte")
        if len(self.fields) == 1:
            return queryset.filter(**{f"{self.fields[0]}__{op}": cursor.position[0]})
        (first, second), (x, y) = self.fields, cursor.position
        return queryset.filter(
            Q(**{f"{first}__{op_eq}": x})
            & (Q(**{f"{first}__{op}": x}) | Q(**{f"{second}__{op}": y}))
        )

    def encode(self, cursor: Cursor | None) -> str | None:
        if cursor is None:
            return None
        values = [_OLDER if not cursor.reverse else _NEWER]
        for value in cursor.position:
            if isinstance(value, datetime):
                value = value.astimezone(UTC).isoformat()
            values.append(str(value))
        return base64.urlsafe_b64encode("|".join(values).encode()).decode().rstrip("=")

    def decode(self, text: str, model: type[Model]) -> Cursor | None:
        """The cursor in `text`, or None when it is malformed or not one of this keyset's."""
        if not text or len(text) > _MAX_CURSOR or is_unstorable(text):
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        direction, *values = raw.split("|")
        if direction not in (_OLDER, _NEWER) or len(values) != len(self.fields):
            return None
        position = []
        for name, value in zip(self.fields, values, strict=True):
            parsed = _parse(model, name, value)
            if parsed is None:
                return None
            position.append(parsed)
        return Cursor(position=tuple(position), reverse=direction == _NEWER)


def _parse(model: type[Model], name: str, value: str) -> Any:
    field: Field = model._meta.pk if name == "pk" else model._meta.get_field(name)  # type: ignore[assignment]
    if not value or is_unstorable(value):
        return None
    try:
        parsed = field.to_python(value)
    except (DjangoValidationError, ValueError, OverflowError):
        return None
    if isinstance(parsed, datetime) and not timezone.is_aware(parsed):
        return None
    return parsed


def keyset_page(
    queryset: QuerySet[M], keyset: Keyset, cursor: Cursor | None, size: int
) -> KeysetPage[M]:
    """The `size` rows of `queryset` past `cursor` (from the newest without one): one query."""
    reverse = cursor is not None and cursor.reverse
    if cursor is not None:
        queryset = keyset.past(queryset, cursor)
    rows = list(queryset.order_by(*keyset.ordering(reverse=reverse))[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    if reverse:
        rows.reverse()
    has_older = more if not reverse else True
    has_newer = cursor is not None if not reverse else more
    if rows:
        first, last = keyset.position_of(rows[0]), keyset.position_of(rows[-1])
    else:  # past either end: link back from where the cursor stood
        first = last = cursor.position if cursor is not None else ()
    return KeysetPage(
        rows=rows,
        next=Cursor(last) if has_older and last else None,
        previous=Cursor(first, reverse=True) if has_newer and first else None,
    )


class KeysetPagination(BasePagination):
    """The API's lists: DRF's cursor response (`next`, `previous`, `results`) over a Keyset.

    A cursor that does not decode, or whose position is not of the keyset's fields, is a 400
    on the `cursor` parameter.
    """

    keyset = Keyset("created_at", "pk")
    page_size = 50
    page_size_query_param = "page_size"
    page_size_query_description = "Number of results to return per page."
    max_page_size = 200
    cursor_query_param = "cursor"
    cursor_query_description = "The pagination cursor value."
    invalid_cursor_message = "Invalid cursor"

    def paginate_queryset(
        self, queryset: QuerySet[Any] | Sequence[Any], request: Request, view: APIView | None = None
    ) -> list[Any]:
        if not isinstance(queryset, QuerySet):
            raise TypeError("keyset pagination needs a queryset")
        self.base_url = request.build_absolute_uri()
        size = self.get_page_size(request)
        cursor = None
        text = request.query_params.get(self.cursor_query_param)
        if text is not None:
            cursor = self.keyset.decode(text, queryset.model)
            if cursor is None:
                raise ValidationError({self.cursor_query_param: [self.invalid_cursor_message]})
        self.page = keyset_page(queryset, self.keyset, cursor, size)
        return self.page.rows

    def get_page_size(self, request: Request) -> int:
        value = request.query_params.get(self.page_size_query_param, "")
        if value.isdigit() and len(value) < 10 and int(value) > 0:
            return min(int(value), self.max_page_size)
        return self.page_size

    def _link(self, cursor: Cursor | None) -> str | None:
        encoded = self.keyset.encode(cursor)
        if encoded is None:
            return None
        return replace_query_param(self.base_url, self.cursor_query_param, encoded)

    def get_next_link(self) -> str | None:
        return self._link(self.page.next)

    def get_previous_link(self) -> str | None:
        return self._link(self.page.previous)

    def get_paginated_response(self, data: Sequence[Any]) -> Response:
        return Response(
            {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": self.cursor_query_description,
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": self.page_size_query_description,
                "schema": {"type": "integer"},
            },
        ]
