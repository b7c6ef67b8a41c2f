"""The keyring: parsing BYOK_ENCRYPTION_KEY and its fallbacks, key ids, and the settings cache."""

import ast
import base64
import hashlib
import hmac
import secrets
from pathlib import Path

import pytest

import swrly.keys
from swrly.keys.errors import KeyringError, UnknownKeyId
from swrly.keys.keyring import generate_key, get_keyring, key_id_for, parse_keyring


def _raw(key: str) -> bytes:
    return base64.urlsafe_b64decode(key)


def test_a_valid_keyring_orders_current_then_fallbacks():
    current, old, older = (generate_key() for _ in range(3))
    keyring = parse_keyring(current, [old, older])
    assert keyring.current.key_id == key_id_for(_raw(current))
    assert keyring.fallback_ids == (key_id_for(_raw(old)), key_id_for(_raw(older)))
    assert keyring.ids == (keyring.current.key_id, *keyring.fallback_ids)
    assert keyring.by_id(keyring.fallback_ids[1]).variable == "BYOK_ENCRYPTION_KEY_FALLBACKS[1]"
    assert keyring.current.variable == "BYOK_ENCRYPTION_KEY"


def test_key_id_is_stable_hex_and_reveals_nothing_of_the_key():
    key = generate_key()
    raw = _raw(key)
    first = parse_keyring(key, []).current
    assert first.key_id == parse_keyring(key, []).current.key_id
    expected = hmac.new(raw, b"swrly.byok.key-id.v1", hashlib.sha256).digest()[:8]
    assert first.key_id == expected
    assert len(first.key_id) == 8
    assert first.key_id_hex == expected.hex()
    assert len(first.key_id_hex) == 16
    assert first.key_id not in raw
    assert first.key_id_hex not in key
    assert key not in repr(first)
    assert key not in repr(parse_keyring(key, []))


def test_padding_is_optional_and_whitespace_is_ignored():
    key = generate_key()
    assert key.endswith("=")
    unpadded = key.rstrip("=")
    assert parse_keyring(unpadded, []).current.key_id == parse_keyring(key, []).current.key_id
    assert parse_keyring(f" {key}\n", []).current.key_id == parse_keyring(key, []).current.key_id


def test_generate_key_produces_a_valid_distinct_key():
    first, second = generate_key(), generate_key()
    assert first != second
    assert len(_raw(first)) == 32
    parse_keyring(first, [second])


def test_fallbacks_may_be_a_comma_separated_string():
    current, old, older = (generate_key() for _ in range(3))
    keyring = parse_keyring(current, f"{old}, {older}")
    assert keyring.fallback_ids == parse_keyring(current, [old, older]).fallback_ids


@pytest.mark.parametrize(
    ("current", "fallbacks", "variable", "problem"),
    [
        ("", [], "BYOK_ENCRYPTION_KEY", "is not set"),
        ("not base64 at all!", [], "BYOK_ENCRYPTION_KEY", "urlsafe base64"),
        ("abc+def/" * 5 + "abcd", [], "BYOK_ENCRYPTION_KEY", "urlsafe base64"),
        ("A", [], "BYOK_ENCRYPTION_KEY", "base64"),
        (
            base64.urlsafe_b64encode(bytes(range(16))).decode(),
            [],
            "BYOK_ENCRYPTION_KEY",
            "decodes to 16 bytes",
        ),
        (
            base64.urlsafe_b64encode(bytes(range(33))).decode(),
            [],
            "BYOK_ENCRYPTION_KEY",
            "decodes to 33 bytes",
        ),
        (None, ["x" * 40], "BYOK_ENCRYPTION_KEY_FALLBACKS[0]", "decodes to 30 bytes"),
        (None, ["", None], "BYOK_ENCRYPTION_KEY_FALLBACKS[0]", "is empty"),
        (None, [None, b"bytes"], "BYOK_ENCRYPTION_KEY_FALLBACKS[1]", "must be a string"),
        (
            None,
            [None, base64.urlsafe_b64encode(b"short").decode()],
            "BYOK_ENCRYPTION_KEY_FALLBACKS[1]",
            "decodes to 5 bytes",
        ),
    ],
)
def test_malformed_keys_name_the_variable_and_not_the_value(current, fallbacks, variable, problem):
    good = generate_key()
    current = good if current is None else current
    fallbacks = [generate_key() if f is None else f for f in fallbacks]
    with pytest.raises(KeyringError) as caught:
        parse_keyring(current, fallbacks)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable + " ")
    assert problem in str(caught.value)
    for value in [current, *fallbacks]:
        if isinstance(value, str) and len(value) > 4:
            assert value not in str(caught.value)
    assert good not in str(caught.value)


def test_any_43_character_urlsafe_string_is_a_32_byte_key():
    # Not an error: 43 base64 characters always decode to 32 bytes. The check is on length.
    assert parse_keyring("x" * 43, []).current.key_id == key_id_for(_raw("x" * 43 + "="))


def test_a_fallback_equal_to_the_current_key_is_rejected():
    key = generate_key()
    with pytest.raises(KeyringError) as caught:
        parse_keyring(key, [generate_key(), key.rstrip("=")])
    assert caught.value.variable == "BYOK_ENCRYPTION_KEY_FALLBACKS[1]"
    assert "duplicates BYOK_ENCRYPTION_KEY" in str(caught.value)
    assert key.rstrip("=") not in str(caught.value)


def test_duplicated_fallbacks_are_rejected():
    key, old = generate_key(), generate_key()
    with pytest.raises(KeyringError) as caught:
        parse_keyring(key, [old, generate_key(), f" {old}"])
    assert caught.value.variable == "BYOK_ENCRYPTION_KEY_FALLBACKS[2]"
    assert "duplicates BYOK_ENCRYPTION_KEY_FALLBACKS[0]" in str(caught.value)


def test_by_id_of_an_unknown_key_raises_unknown_key_id():
    keyring = parse_keyring(generate_key(), [])
    retired = key_id_for(secrets.token_bytes(32))
    assert retired not in keyring
    with pytest.raises(UnknownKeyId) as caught:
        keyring.by_id(retired)
    assert caught.value.key_id_hex == retired.hex()


def test_get_keyring_follows_the_settings(settings):
    first, second = generate_key(), generate_key()
    settings.BYOK_ENCRYPTION_KEY = first
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = []
    keyring = get_keyring()
    assert get_keyring() is keyring  # cached while the settings stay the same
    assert keyring.current.key_id == key_id_for(_raw(first))
    settings.BYOK_ENCRYPTION_KEY = second
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = [first]
    rotated = get_keyring()
    assert rotated.current.key_id == key_id_for(_raw(second))
    assert rotated.fallback_ids == (key_id_for(_raw(first)),)


def test_get_keyring_raises_for_a_broken_setting(settings):
    settings.BYOK_ENCRYPTION_KEY = generate_key()
    settings.BYOK_ENCRYPTION_KEY_FALLBACKS = ["too-short"]
    with pytest.raises(KeyringError) as caught:
        get_keyring()
    assert caught.value.variable == "BYOK_ENCRYPTION_KEY_FALLBACKS[0]"


def test_the_key_service_imports_no_django_app():
    package = Path(swrly.keys.__file__).parent
    apps = {"tenants", "runs"}
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            assert not {name.split(".")[0] for name in names} & apps, path.name
