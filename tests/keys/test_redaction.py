"""Redaction by value: a held key never reaches a log record or an error report."""

import logging
import secrets
import sys

from django.test import RequestFactory
from django.views.debug import get_exception_reporter_class

from swrly.keys.redaction import REDACTED, redact
from swrly.keys.secret import ProviderSecret


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
