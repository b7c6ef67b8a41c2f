"""The API's one JSON parser: refuses what no database column can hold and what nests too deep.

Every API write reads its body through `request.data`, that is through this parser, so the
checks of swrly/input_limits.py hold for every route, and before any view or service (the key
deposit included) sees the body.
"""

import codecs
import json
import math
from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser, get_encoding  # type: ignore[attr-defined]

from swrly.input_limits import MAX_JSON_DEPTH, UNSTORABLE_MESSAGE, TooDeep, unstorable_paths


class NestingTooDeep(ParseError):
    default_code = "nesting_too_deep"
    default_detail = f"The JSON body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels."


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: a float no JSON column stores
        raise ValueError(f"{text[:20]} is out of range")
    return value


class SafeJSONParser(JSONParser):
    """JSON, with no NUL or unpaired surrogate in any string or key (400 naming each field),
    at most MAX_JSON_DEPTH levels deep (400 `nesting_too_deep`), and finite numbers only."""

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        encoding = get_encoding(parser_context or {})  # text codecs only (not in DRF's stubs)
        try:
            text = codecs.getreader(encoding)(stream).read()
            data = json.loads(text, parse_constant=_constant, parse_float=_finite_float)
        except RecursionError:
            raise NestingTooDeep from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        try:
            paths = unstorable_paths(data)
        except TooDeep:
            raise NestingTooDeep from None
        if paths:
            raise ValidationError({path or "body": [UNSTORABLE_MESSAGE] for path in paths})
        return data
