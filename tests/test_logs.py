"""Machine-readable logs: JSON lines, redacted, with a request id that follows a run from the
API through the broker to the worker."""

import json
import logging

import pytest
from django.test import Client

from swrly.logs import logging_config, request_id

CANARY = "sk-ant-canary-logs-0123456789abcdefXYZ"


def _lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_are_redacted_and_carry_the_request_id(captured):
    token = request_id.set("req-1")
    try:
        try:
            raise RuntimeError(f"provider said {CANARY}")
        except RuntimeError:
            logging.getLogger("swrly.test").exception("call failed with %s", CANARY)
    finally:
        request_id.reset(token)
    (entry,) = _lines(captured)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "swrly.test"
    assert entry["request_id"] == "req-1"
    assert "RuntimeError" in entry["exception"]
    assert CANARY not in captured.getvalue()


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logging_config(log_format="xml", level="INFO")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123.x:y", True), ("bad id\r\nInjected: 1", False), ("x" * 65, False), (None, False)],
)
def test_the_request_id_is_answered_and_only_a_safe_one_is_kept(db, sent, kept):
    headers = {"X-Request-Id": sent} if sent is not None else {}
    answered = Client(headers=headers).get("/healthz")["X-Request-Id"]
    assert (answered == sent) is kept
    assert len(answered) <= 64
    assert "\n" not in answered
