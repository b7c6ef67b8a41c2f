"""Redaction by value: a held key never reaches a log record or an error report."""

import base64
import html
import json
import logging
import pickle
import re
import secrets
import sys
import urllib.parse

import pytest
from django.test import RequestFactory
from django.views.debug import get_exception_reporter_class, get_exception_reporter_filter

from swrly.keys.encodings import KeyMatcher, base64_forms
from swrly.keys.redaction import REDACTED, foreign_key_in, redact
from swrly.keys.secret import ProviderSecret, live_secrets, redaction_scope


def _canary():
    # Not shaped like a provider key, so only redaction by value can catch it.
    return "canary-" + secrets.token_hex(16)


def test_a_held_secret_is_replaced_wherever_it_appears():
    value = _canary()
    secret = ProviderSecret(value)
    assert redact(f"provider said: invalid key {value[:-1]}{value[-1]}!") == (
        f"provider said: invalid key {REDACTED}!"
    )
    secret.discard()
    assert redact(value) == value  # no longer held: no longer known


def test_provider_key_shapes_are_masked_even_when_not_held():
    text = "x-api-key: sk-ant-api03-abcdefghijklmnopqrstu and sk-proj-ABCDEFGHIJKLMNOPQR"
    assert redact(text) == f"x-api-key: {REDACTED} and {REDACTED}"
    assert redact("sk-short") == "sk-short"


def test_log_messages_arguments_and_tracebacks_are_redacted(caplog):
    value = _canary()
    secret = ProviderSecret(value)
    logger = logging.getLogger("swrly.tests.redaction")
    with caplog.at_level(logging.DEBUG, logger="swrly.tests.redaction"):
        logger.debug("calling with anthropic_api_key=%s", value)
        logger.info({"openai": value})
        try:
            raise RuntimeError(f"upstream echoed {value}")
        except RuntimeError:
            logger.exception("provider failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert value not in text
    assert text.count(REDACTED) >= 4
    secret.discard()


def _report_for(value, *, body=b"", content_type="application/json"):
    request = RequestFactory().post("/api/v1/runs/", data=body, content_type=content_type)
    provider_keys = {"anthropic": value}  # noqa: F841 (a local the report shows)
    anthropic_api_key = value  # noqa: F841
    try:
        raise ValueError(f"bad key {value}")
    except ValueError:
        exc_type, exc, tb = sys.exc_info()
    # the reporter class the settings configure, as Django's error handling picks it
    return get_exception_reporter_class(request)(request, exc_type, exc, tb, is_email=True)


def test_error_reports_redact_locals_and_request_bodies():
    value = _canary()
    secret = ProviderSecret(value)
    reporter = _report_for(value, body=f'{{"provider_keys": {{"anthropic": "{value}"}}}}'.encode())
    assert value not in reporter.get_traceback_text()
    assert value not in reporter.get_traceback_html()
    form = RequestFactory().post("/x/", {"anthropic_api_key": value})
    try:
        raise ValueError("form")
    except ValueError:
        reporter = get_exception_reporter_class(form)(form, *sys.exc_info(), is_email=True)
    assert value not in reporter.get_traceback_text()
    secret.discard()


# --- Every encoding, and how long a key stays known ----------------------------------------


def _echoes(value: str) -> dict[str, str]:
    """Every form a provider could echo `value` in, each inside some surrounding text."""
    data = value.encode()
    every_char_json = "".join(f"\\u{ord(c):04x}" for c in value)
    return {
        "raw": value,
        "json.dumps": json.dumps(value),
        "json.dumps twice": json.dumps(json.dumps(value)),
        "json every char": every_char_json,
        "json every char, upper hex": every_char_json.upper().replace("\\U", "\\u"),
        "html.escape": html.escape(value),
        "html escaped twice": html.escape(html.escape(value)),
        "html numeric": "".join(f"&#{ord(c)};" for c in value),
        "html hex": "".join(f"&#x{ord(c):X};" for c in value),
        "quote": urllib.parse.quote(value, safe=""),
        "quote_plus": urllib.parse.quote_plus(value),
        "percent every byte, lower": "".join(f"%{b:02x}" for b in data),
        "quote twice": urllib.parse.quote(urllib.parse.quote(value, safe=""), safe=""),
        "base64": base64.b64encode(data).decode(),
        "base64url": base64.urlsafe_b64encode(data).decode(),
        "base64 in a blob, +1": base64.b64encode(b"{" + data + b"}").decode(),
        "base64 in a blob, +2": base64.b64encode(b'{"' + data + b'"}').decode(),
        "base64url in a blob, +2": base64.urlsafe_b64encode(b"k:" + data).decode(),
        "base64 in JSON": json.dumps(base64.b64encode(b"k=" + data).decode()).replace("/", "\\/"),
        "hex": data.hex(),
        "HEX": data.hex().upper(),
    }


@pytest.mark.parametrize(
    "shape",
    [
        "canary-{}",  # the alphabet keys are accepted in
        # and one no escaping leaves alone: quotes, markup, backslash, slash, plus, space
        "canary \"<&>' \\/+=%{}",
    ],
    ids=["key alphabet", "every escaped character"],
)
def test_a_held_secret_is_replaced_in_every_encoding(shape):
    value = shape.format(secrets.token_urlsafe(24))
    secret = ProviderSecret(value)
    for name, echo in _echoes(value).items():
        shown = redact(f"provider said: ({echo}) and more")
        assert REDACTED in shown, name
        assert value not in shown, name
        for fragment in base64_forms(value):
            assert fragment not in shown, name
        assert value.encode().hex() not in shown.lower(), name
        # nothing but the escapes' own quotes and padding is left around the replacement
        assert len(shown) < len("provider said: () and more") + len(REDACTED) + 12, (name, shown)
    secret.discard()
    assert redact(value) == value


def test_redaction_does_not_touch_other_text():
    secret = ProviderSecret("canary-" + secrets.token_urlsafe(24))
    text = 'normal text, &amp; "quotes" \\u0041 %41 QUJD 414243 ' * 20
    assert redact(text) == text
    secret.discard()


def test_a_scope_keeps_a_discarded_key_known_until_it_ends():
    value = _canary()
    with redaction_scope():
        secret = ProviderSecret(value)
        secret.discard()
        assert secret.discarded
        assert value in live_secrets()  # an error report made now still redacts it
        assert redact(value) == REDACTED
    assert value not in live_secrets()
    assert redact(value) == value


def test_a_scope_forgets_a_key_that_outlived_it_only_when_discarded():
    value = _canary()
    with redaction_scope():
        secret = ProviderSecret(value)
    assert value in live_secrets()  # still held
    secret.discard()
    assert value not in live_secrets()


def test_scopes_are_per_context():
    value, other = _canary(), _canary()
    with redaction_scope():
        held = ProviderSecret(value)
        with redaction_scope():
            ProviderSecret(other).discard()
            assert {value, other} <= live_secrets()
        assert other not in live_secrets()
        held.discard()
        assert value in live_secrets()
    assert value not in live_secrets()


def test_a_foreign_key_is_found_in_any_encoding_but_the_own_key_is_not_foreign():
    mine, theirs = ProviderSecret(_canary()), ProviderSecret(_canary())
    own_value, their_value = mine.reveal(), theirs.reveal()
    assert not foreign_key_in(f"Bearer {own_value}", own=mine)
    for name, echo in _echoes(their_value).items():
        assert foreign_key_in(f'{{"prompt": "{echo}"}}', own=mine), name
    same = ProviderSecret(own_value)  # the same key held twice is not another key
    assert not foreign_key_in(own_value, own=same)
    for secret in (mine, theirs, same):
        secret.discard()
    assert not foreign_key_in(their_value, own=mine)


def test_the_matcher_never_shows_the_key():
    value = _canary()
    matcher = KeyMatcher(value)
    assert value not in repr(matcher)
    with pytest.raises(TypeError):
        pickle.dumps(matcher)


def test_error_reports_hide_api_write_parameters_and_honour_markers_with_debug(settings):
    settings.DEBUG = True  # Django's own filter would switch itself off
    value = _canary()
    form = RequestFactory().post("/api/v1/workflows/", {"name": "visible-only-on-pages"})
    form.sensitive_post_parameters = []
    reporter_filter = get_exception_reporter_filter(form)
    assert reporter_filter.is_active(form)
    shown = reporter_filter.get_post_parameters(form).dict()
    assert shown == {"name": reporter_filter.cleansed_substitute}
    page = RequestFactory().post("/t/acme/members/", {"email": "a@b.example", "other": value})
    secret = ProviderSecret(value)
    shown = get_exception_reporter_filter(page).get_post_parameters(page).dict()
    assert shown["email"] == "a@b.example"
    assert shown["other"] != value
    secret.discard()


def _failed_parse_report(request):
    body = request.body  # read, as a parser would: a frame variable of the report
    try:
        json.loads(body.decode())
        raise ValueError("parse failed")
    except ValueError:
        return get_exception_reporter_class(request)(request, *sys.exc_info(), is_email=True)


def test_error_reports_hide_the_raw_body_of_an_api_write():
    value = _canary()  # not held: only the body rule can hide it
    body = json.dumps({"provider_keys": {"x": value}})
    request = RequestFactory().post("/api/v1/runs/", data=body, content_type="application/json")
    reporter = _failed_parse_report(request)
    report = reporter.get_traceback_html()
    assert "(the request body)" in report
    assert value not in report


def test_a_value_longer_than_any_key_is_still_redacted_raw():
    value = "canary-" + secrets.token_urlsafe(1500)  # refused as a key; may still be logged
    secret = ProviderSecret(value)
    assert redact(f"<{value}>") == f"<{REDACTED}>"
    secret.discard()


def test_a_matcher_leaves_nothing_in_the_re_module_cache():
    value = _canary()
    secret = ProviderSecret(value)
    assert redact(f"%{value}&") == f"%{REDACTED}&"  # escape characters: the full patterns
    assert redact(value.encode().hex().upper()) == REDACTED  # none: the literal forms
    # the patterns hold base64 and hex of the key literally; re's cache must not keep them
    fragment = max(re.findall(r"[A-Za-z0-9]{10,}", base64_forms(value)[0]), key=len)
    cached = " ".join(str(key) for key in re._cache)
    assert fragment not in cached
    assert value.encode().hex()[:20] not in cached
    secret.discard()
