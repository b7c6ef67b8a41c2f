"""Every form a key can take when something echoes it: the patterns redaction searches for.

A provider (or anything else) may send a key back raw or escaped for the place it writes to:
JSON (`\\"`, `\\\\`, `\\u0073`), HTML (`&quot;`, `&#115;`, `&#x73;`), URLs (`%73`, `+` for a
space), or encoded as a whole: base64 (standard or urlsafe, alone or inside a larger blob, at any
of the three byte alignments) or hex. `KeyMatcher` compiles, once per key, two patterns that
find every one of these forms, mixed and repeated escapes included (a JSON string inside a JSON
string, `&amp;#115;`):

- the key itself, where each character may appear raw (after any number of backslashes), as a
  JSON `\\uXXXX` escape, an HTML numeric or named entity, or percent-encoded (hex in any case);
- the key's base64 and hex encodings, where each character that is not a letter or digit may
  appear escaped the same ways (`\\/`, `%2F`), and hex in any case.

The matcher never shows the key: its repr is fixed and its patterns are private.
"""

from __future__ import annotations

import base64
import re
import string

from django.views.decorators.debug import sensitive_variables

_ALNUM = frozenset(string.ascii_letters + string.digits)
_NAMED_ENTITIES = {'"': "quot", "&": "amp", "'": "apos", "<": "lt", ">": "gt"}
_URLSAFE = str.maketrans("+/", "-_")


def _ci(text: str) -> str:
    """`text` (hex digits, letters) matched in any case."""
    return f"(?i:{text})"


def _escaped_char(char: str) -> str:
    """A pattern for `char` in any of its escaped forms, or raw."""
    code = ord(char)
    alternatives = [r"\\*" + re.escape(char)]
    if code <= 0xFFFF:
        alternatives.append(r"\\+u" + _ci(f"{code:04x}"))
    else:  # JSON writes characters outside the BMP as a surrogate pair
        offset = code - 0x10000
        high, low = 0xD800 + (offset >> 10), 0xDC00 + (offset & 0x3FF)
        alternatives.append(r"\\+u" + _ci(f"{high:04x}") + r"\\+u" + _ci(f"{low:04x}"))
    alternatives.append(f"&(?:amp;)*#(?:0*{code}|{_ci(f'x0*{code:x}')});?")
    if char in _NAMED_ENTITIES:
        alternatives.append(f"&(?:amp;)*{_NAMED_ENTITIES[char]};")
    alternatives.append("".join("%(?:25)*" + _ci(f"{byte:02x}") for byte in char.encode()))
    if char == " ":
        alternatives.append(r"\+")
    return "(?:" + "|".join(alternatives) + ")"


def _encoded_text(text: str, *, any_case: bool = False) -> str:
    """A pattern for an encoding of the key: letters and digits literal, the rest escapable."""
    parts = []
    for char in text:
        if char in _ALNUM:
            parts.append(_ci(char) if any_case and char.isalpha() else char)
        else:
            parts.append(_escaped_char(char))
    return "".join(parts)


@sensitive_variables("value", "data", "encoded")
def base64_forms(value: str) -> list[str]:
    """The base64 fragments that only `value` can produce, longest first.

    For each of the three byte alignments the key can have inside a larger blob, the characters
    that depend on the key's bytes alone; plus the whole padded encoding of the key by itself;
    each in the standard and the urlsafe alphabet.
    """
    data = value.encode()
    forms: set[str] = set()
    for alignment in range(3):
        encoded = base64.b64encode(bytes(alignment) + data).decode()
        start = -(-8 * alignment // 6)  # the first character made of key bits only
        end = 8 * (alignment + len(data)) // 6  # past the last one
        fragments = [encoded[start:end]]
        if alignment == 0:
            fragments.append(encoded)
        for fragment in fragments:
            if fragment:
                forms.update((fragment, fragment.translate(_URLSAFE)))
    return sorted(forms, key=len, reverse=True)


class KeyMatcher:
    """Finds one key in any form it can be echoed in; built once, when the key becomes live."""

    __slots__ = ("_encoded", "_raw")

    @sensitive_variables("value")
    def __init__(self, value: str) -> None:
        self._raw = re.compile("".join(_escaped_char(char) for char in value))
        encodings = [_encoded_text(form) for form in base64_forms(value)]
        encodings.append(_encoded_text(value.encode().hex(), any_case=True))
        self._encoded = re.compile("|".join(encodings))

    @sensitive_variables("self", "pattern")
    def sub(self, replacement: str, text: str) -> str:
        """`text` with every form of the key replaced by `replacement`."""
        for pattern in (self._raw, self._encoded):
            text = pattern.sub(replacement, text)
        return text

    @sensitive_variables("self", "pattern")
    def found_in(self, text: str) -> bool:
        """Whether any form of the key appears in `text`."""
        return any(pattern.search(text) for pattern in (self._raw, self._encoded))

    def __repr__(self) -> str:
        return "KeyMatcher(****)"

    def __reduce__(self) -> object:
        raise TypeError("KeyMatcher cannot be pickled")
