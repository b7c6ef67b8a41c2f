"""What request input Swrly accepts at all, checked before any view or service sees it.

PostgreSQL's `text` and `jsonb` cannot hold U+0000, and no UTF-8 column can hold a lone
surrogate (U+D800 to U+DFFF, which JSON's `\\ud800` escape can produce): such a value would reach
the database deep inside a service, after keys were deposited, and answer 500. Deeply nested
JSON exhausts the recursion of the parser and of everything that walks the value afterwards.
Both are refused at the door instead: the JSON parser of the API (swrly/web/parsers.py) and
the request middleware (query strings and form bodies, swrly/middleware.py) use these checks.
"""

import re
from collections.abc import Iterable, Iterator
from typing import Any

# The deepest nesting of arrays and objects a JSON body may have. A workflow with steps is 3
# levels deep ({"steps": [{...}]}); run input is the customer's own JSON, nested up to here.
MAX_JSON_DEPTH = 32

UNSTORABLE_MESSAGE = (
    "contains a NUL character (\\u0000) or an unpaired surrogate, which cannot be stored"
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with what no database column accepts replaced by U+FFFD: for text Swrly did not
    take at the door (a provider's answer or error), which must still be stored as it came."""
    if is_unstorable(text):
        return _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))
    return text


def is_unstorable(text: str) -> bool:
    """True when `text` holds a character no database column accepts (NUL, lone surrogate)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable_name(name: str) -> str:
    """`name` with its unstorable characters escaped, fit to name a field in an error."""
    return "".join(
        f"\\u{ord(c):04x}" if c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF else c for c in name
    )


class TooDeep(ValueError):
    """The value nests arrays and objects deeper than the limit."""

    def __init__(self, path: str, limit: int) -> None:
        super().__init__(f"nested deeper than {limit} levels at {path or 'the top level'}")
        self.path = path
        self.limit = limit


def _child_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    key = printable_name(key)
    return f"{parent}.{key}" if parent else key


def unstorable_paths(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> list[str]:
    """The paths (`input.items[2].name`) of the strings and keys in a parsed JSON value that
    hold an unstorable character. Iterative, so no nesting can exhaust the stack; raises
    TooDeep past `max_depth` levels of arrays and objects."""
    found: list[str] = []
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if isinstance(item, str):
            if is_unstorable(item):
                found.append(path)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= max_depth:
            raise TooDeep(path, max_depth)
        children: Iterable[tuple[str | int, Any]]
        if isinstance(item, dict):
            for key in item:
                if is_unstorable(key):
                    found.append(_child_path(path, key))
            children = item.items()
        else:
            children = enumerate(item)
        stack.extend(
            (_child_path(path, key), child, depth + 1) for key, child in reversed(list(children))
        )
    return found


def unstorable_parameters(items: Iterable[tuple[str, str]]) -> Iterator[str]:
    """The names of the (name, value) parameters of a query string or form with an
    unstorable character in the name or the value."""
    for name, value in items:
        if is_unstorable(name) or is_unstorable(value):
            yield printable_name(name)
