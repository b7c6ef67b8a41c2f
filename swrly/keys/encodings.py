"""Every form a key can take when something echoes it: the patterns redaction searches for.

A provider (or anything else) may send a key back raw or escaped for the place it writes to:
JSON (`\\"`, `\\\\`, `\\u0073`), HTML (`&quot;`, `&#115;`, `&#x73;`), URLs (`%73`, `+` for a
space), or encoded as a whole: base64 (standard or urlsafe, alone or inside a larger blob, at any
of the three byte alignments) or hex. `KeyMatcher` compiles, once per key, two patterns that
find every one of these forms, mixed and repeated escapes included (a JSON string inside a JSON
string, `&amp;#115;`), compiled the first time they are needed:

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

# re's own compiler (Python 3.11+), which `re.compile` calls after its cache lookup.
from re import _compiler as _sre_compiler  # type: ignore[attr-defined]  # private: no stub
from typing import NoReturn

from django.views.decorators.debug import sensitive_variables

_ALNUM = frozenset(string.ascii_letters + string.digits)
_NAMED_ENTITIES = {'"': "quot", "&": "amp", "'": "apos", "<": "lt", ">": "gt"}
_URLSAFE = str.maketrans("+/", "-_")


def _compile(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled without `re`'s module cache, which would keep it (and so the key)
    reachable after the key was discarded."""
    compiled: re.Pattern[str] = _sre_compiler.compile(pattern, 0)
    return compiled


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


# Values longer than any valid key (they are refused, never deposited or sent) are matched
# raw only: compiling every encoding of a huge value would cost more than it protects.
ENCODED_FORMS_MAX_LENGTH = 512

# A text without these characters can hold a key only in its literal forms (raw, base64, hex):
# every escape (JSON, HTML, URL, `+` for a space) needs one of them.
_ESCAPE_CHARS = re.compile(r"[\\&%+]")


class KeyMatcher:
    """Finds one key in any form it can be echoed in.

    A text with no escape character in it is searched for the literal forms only (`str`
    operations and one small case-insensitive pattern for hex). The escape-aware patterns are
    compiled once, the first time a text that could hold an escaped form is searched (a key
    deposited and consumed with nothing escaped to redact costs no compilation), and dropped
    with the matcher.
    """

    __slots__ = ("_encoded", "_hex", "_literals", "_raw", "_value")

    @sensitive_variables("value")
    def __init__(self, value: str) -> None:
        self._value = value
        self._literals: list[str] | None = None
        self._hex: re.Pattern[str] | None = None
        self._raw: re.Pattern[str] | None = None
        self._encoded: re.Pattern[str] | None = None

    @sensitive_variables("self", "value")
    def _literal_forms(self) -> tuple[list[str], re.Pattern[str] | None]:
        if self._literals is None:
            value = self._value
            if len(value) > ENCODED_FORMS_MAX_LENGTH:
                self._literals = [value]
            else:
                self._hex = _compile("(?i:" + value.encode().hex() + ")")
                self._literals = sorted({value, *base64_forms(value)}, key=len, reverse=True)
        return self._literals, self._hex

    @sensitive_variables("self", "value", "encodings")
    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        if self._raw is None:
            value = self._value
            if len(value) > ENCODED_FORMS_MAX_LENGTH:
                self._raw = _compile(re.escape(value))
                return (self._raw,)
            encodings = [_encoded_text(form) for form in base64_forms(value)]
            encodings.append(_encoded_text(value.encode().hex(), any_case=True))
            self._encoded = _compile("|".join(encodings))
            self._raw = _compile("".join(_escaped_char(char) for char in value))
        if self._encoded is None:
            return (self._raw,)
        return (self._raw, self._encoded)

    @sensitive_variables("self", "pattern", "literals", "literal", "hex_pattern")
    def sub(self, replacement: str, text: str) -> str:
        """`text` with every form of the key replaced by `replacement`."""
        if _ESCAPE_CHARS.search(text):
            for pattern in self._patterns():
                text = pattern.sub(replacement, text)
            return text
        literals, hex_pattern = self._literal_forms()
        for literal in literals:
            text = text.replace(literal, replacement)
        return hex_pattern.sub(replacement, text) if hex_pattern is not None else text

    @sensitive_variables("self", "pattern", "literals", "literal", "hex_pattern")
    def found_in(self, text: str) -> bool:
        """Whether any form of the key appears in `text`."""
        if _ESCAPE_CHARS.search(text):
            return any(pattern.search(text) for pattern in self._patterns())
        literals, hex_pattern = self._literal_forms()
        if any(literal in text for literal in literals):
            return True
        return hex_pattern is not None and hex_pattern.search(text) is not None

    def __repr__(self) -> str:
        return "KeyMatcher(****)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("KeyMatcher cannot be pickled")
