"""The token format: layout, binding to (tenant, run, provider), tampering, key ids, rewrap."""

import uuid

import pytest

from swrly.keys.errors import TokenAuthenticationFailed, UnknownKeyId
from swrly.keys.keyring import generate_key, parse_keyring
from swrly.keys.tokens import (
    AD_LABEL,
    HEADER_BYTES,
    associated_data,
    open_token,
    rewrap,
    seal,
    token_key_id,
)

KEY = "sk-ant-api03-" + "t" * 40 + "Tk3n"


@pytest.fixture
def keyring():
    return parse_keyring(generate_key(), [])


@pytest.fixture
def where():
    return {"tenant_id": str(uuid.uuid4()), "run_id": str(uuid.uuid4()), "provider": "anthropic"}


def test_round_trip(keyring, where):
    token = seal(keyring, **where, plaintext=KEY)
    assert open_token(keyring, token, **where) == KEY


def test_layout_version_key_id_nonce_ciphertext_and_tag(keyring, where):
    token = seal(keyring, **where, plaintext=KEY)
    assert token[0] == 0x01
    assert token[1:9] == keyring.current.key_id == token_key_id(token)
    assert HEADER_BYTES == 21
    assert len(token) == 1 + 8 + 12 + len(KEY) + 16
    assert KEY.encode() not in token


def test_every_token_has_a_fresh_nonce(keyring, where):
    tokens = {seal(keyring, **where, plaintext=KEY) for _ in range(50)}
    assert len(tokens) == 50
    assert len({token[9:21] for token in tokens}) == 50


def test_associated_data_binds_tenant_run_and_provider(where):
    ad = associated_data(**where)
    expected = AD_LABEL + (
        f"{where['tenant_id']}\x00{where['run_id']}\x00{where['provider']}".encode()
    )
    assert ad == expected
    assert ad.startswith(b"swrly.byok.v1\x00")


def test_uuid_objects_and_their_strings_bind_alike(keyring):
    tenant, run = uuid.uuid4(), uuid.uuid4()
    token = seal(keyring, tenant_id=tenant, run_id=run, provider="openai", plaintext=KEY)
    assert open_token(keyring, token, tenant_id=str(tenant), run_id=str(run), provider="openai")


@pytest.mark.parametrize("moved", ["tenant_id", "run_id", "provider"])
def test_a_token_moved_to_another_tenant_run_or_provider_fails(keyring, where, moved):
    token = seal(keyring, **where, plaintext=KEY)
    elsewhere = dict(where, **{moved: "openai" if moved == "provider" else str(uuid.uuid4())})
    with pytest.raises(TokenAuthenticationFailed) as caught:
        open_token(keyring, token, **elsewhere)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"tenant_id": "a\x00b"},
        {"run_id": "x:y"},
        {"tenant_id": ""},
        {"provider": "anthropic\n"},
        {"run_id": "r" * 65},
    ],
)
def test_ambiguous_ids_are_refused(keyring, where, fields):
    with pytest.raises(ValueError, match="must be 1-64 characters"):
        seal(keyring, **dict(where, **fields), plaintext=KEY)


def test_a_flipped_bit_anywhere_is_rejected(keyring, where):
    token = seal(keyring, **where, plaintext=KEY)
    for index in range(len(token)):
        for bit in range(8):
            tampered = bytearray(token)
            tampered[index] ^= 1 << bit
            # Bytes 1-8 are the key id: a changed id names a key the keyring does not hold.
            expected = UnknownKeyId if 1 <= index <= 8 else TokenAuthenticationFailed
            with pytest.raises(expected):
                open_token(keyring, bytes(tampered), **where)


@pytest.mark.parametrize("length", [0, 1, 8, 9, 21, 36])
def test_truncated_tokens_fail_authentication(keyring, where, length):
    token = seal(keyring, **where, plaintext=KEY)
    with pytest.raises(TokenAuthenticationFailed, match="truncated"):
        open_token(keyring, token[:length], **where)


def test_an_unknown_version_fails_authentication(keyring, where):
    token = seal(keyring, **where, plaintext=KEY)
    with pytest.raises(TokenAuthenticationFailed, match="unknown token version 0x02"):
        open_token(keyring, b"\x02" + token[1:], **where)
    with pytest.raises(TokenAuthenticationFailed, match="unknown token version"):
        token_key_id(b"\x00" + token[1:])


def test_a_fallback_key_opens_a_token_sealed_before_rotation(where):
    old, new = generate_key(), generate_key()
    token = seal(parse_keyring(old, []), **where, plaintext=KEY)
    rotated = parse_keyring(new, [old])
    assert token_key_id(token) == rotated.fallback_ids[0]
    assert open_token(rotated, token, **where) == KEY


def test_a_retired_key_gives_unknown_key_id(where):
    old, new = generate_key(), generate_key()
    old_keyring = parse_keyring(old, [])
    token = seal(old_keyring, **where, plaintext=KEY)
    with pytest.raises(UnknownKeyId) as caught:
        open_token(parse_keyring(new, []), token, **where)
    assert caught.value.key_id_hex == old_keyring.current.key_id_hex


def test_rewrap_moves_a_token_to_the_current_key(where):
    old, new = generate_key(), generate_key()
    token = seal(parse_keyring(old, []), **where, plaintext=KEY)
    rotated = parse_keyring(new, [old])
    rewrapped = rewrap(rotated, token, **where)
    assert token_key_id(rewrapped) == rotated.current.key_id
    assert open_token(parse_keyring(new, []), rewrapped, **where) == KEY
    with pytest.raises(TokenAuthenticationFailed):  # still bound to the same run
        rewrap(rotated, token, **dict(where, run_id=str(uuid.uuid4())))
    with pytest.raises(UnknownKeyId):
        rewrap(parse_keyring(new, []), token, **where)
