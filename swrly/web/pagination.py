from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

from swrly.input_limits import is_unstorable


class NewestFirstPagination(CursorPagination):
    """Cursor pagination over `created_at`, newest first: stable under concurrent inserts.

    A cursor that does not decode, or whose position is not a date-time, is a 400 on the
    `cursor` parameter (DRF says 404, or lets the position reach the database).
    """

    ordering = ("-created_at", "-pk")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def decode_cursor(self, request: Any) -> Any:
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            cursor = None
            valid = False
        else:
            valid = cursor is None or cursor.position is None or _is_datetime(cursor.position)
        if not valid:
            raise ValidationError({"cursor": [self.invalid_cursor_message]})
        return cursor


def _is_datetime(position: object) -> bool:
    # A str from the cursor's query string (the stubs say int: DRF's own ordering is numeric).
    if not isinstance(position, str) or is_unstorable(position):
        return False
    try:
        return parse_datetime(position) is not None
    except ValueError:
        return False
