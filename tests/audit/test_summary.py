"""The audit log page's one-line summaries: readable, short, and never more than the metadata."""

import pytest

from swrly.audit.events import EVENT_TYPES
from swrly.audit.summary import _PHRASES, MAX_SUMMARY, summarize

FP = "v2:" + "3f9a0c1d2e4b" + "0" * 52


def test_a_consumed_key_names_the_provider_the_fingerprint_and_the_worker():
    text = summarize(
        "key.consumed",
        {"provider": "anthropic", "fingerprint": FP, "worker": "w1", "encryption_key_id": "0a1b"},
    )
    assert text == "anthropic key fp 3f9a0c1d taken by worker w1"


def test_a_deposited_key_is_named_by_its_hint_with_its_ttl():
    text = summarize(
        "key.deposited",
        {"provider": "openai", "fingerprint": FP, "hint": "sk-…Qa1x", "ttl": 900},
    )
    assert text == "openai key sk-…Qa1x (fp 3f9a0c1d) deposited, TTL 15 min 00 s"


@pytest.mark.parametrize(
    ("action", "metadata", "expected"),
    [
        (
            "member.role_changed",
            {"from": "developer", "to": "admin"},
            "role changed from developer to admin",
        ),
        ("run.failed", {"error_code": "key_expired"}, "failed: key_expired"),
        (
            "encryption_key.rotated",
            {"from_key_ids": ["0a1b"], "to_key_id": "9f8e", "rewrapped": 2},
            "encryption key rotated 0a1b → 9f8e: 2 stored key(s) rewrapped",
        ),
        (
            "key.discarded",
            {"provider": "openai", "fingerprint": FP, "token_found": None},
            "openai key fp 3f9a0c1d discarded (the key store did not answer)",
        ),
        ("auth.login_failed", {"known_user": False}, "sign-in failed for an unknown user"),
        (
            "key.rewrapped",
            {
                "provider": "openai",
                "from_key_id": "0a1b2c3d4e5f6a7b",
                "to_key_id": "9f8e7d6c5b4a3f2e",
                "rotation": "5b2f0c1e-0000-4000-8000-000000000000",
            },
            "openai stored key rewrapped from encryption key 0a1b2c3d4e5f6a7b to "
            "9f8e7d6c5b4a3f2e by rotation 5b2f0c1e-000…",
        ),
        (
            "tenant.limits_changed",
            {"max_queued_runs": {"from": None, "to": 5}},
            "limits changed: max_queued_runs None → 5",
        ),
    ],
)
def test_phrases(action, metadata, expected):
    assert summarize(action, metadata) == expected


def test_every_declared_action_gets_a_short_line_that_shows_no_secret_part():
    """Every key of every action filled in, long: the line stays short, and the parts of a
    secret that the metadata may carry (a webhook secret's prefix, a signature) stay out."""
    secret = "SECRETPART"
    for event in EVENT_TYPES:
        metadata = {name: f"{secret}-{name}-" + "x" * 80 for name in event.metadata}
        text = summarize(event.action, metadata)
        assert text or not event.metadata, event.action
        assert len(text) <= MAX_SUMMARY, (event.action, text)
        for hidden in ("secret_prefix", "signature", "head_hash"):
            assert f"{secret}-{hidden}" not in text, (event.action, text)
    # the phrases cover every action with metadata worth a sentence
    with_metadata = {e.action for e in EVENT_TYPES if e.metadata}
    assert with_metadata <= set(_PHRASES), sorted(with_metadata - set(_PHRASES))


def test_metadata_of_an_unexpected_shape_falls_back_to_name_value_pairs():
    assert summarize("key.deposited", {"provider": "openai", "ttl": "soon"}) == (
        "Deposited in the key store. provider: openai; ttl: soon"
    )
    assert summarize("test.undeclared", {"a": [1, 2]}) == "a: 1, 2"
    assert summarize("auth.login", None) == ""


def test_two_keys_with_the_same_hint_are_told_apart_by_their_fingerprints():
    same_hint = {"provider": "openai", "hint": "sk-proj-…Qa1x", "ttl": 900}
    one = summarize("key.deposited", {**same_hint, "fingerprint": "v2:" + "1" * 64})
    other = summarize("key.deposited", {**same_hint, "fingerprint": "v2:" + "2" * 64})
    assert one != other
    assert "sk-proj-…Qa1x (fp 11111111)" in one
