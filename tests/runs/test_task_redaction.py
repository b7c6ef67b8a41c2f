"""A task's keys stay known to redaction until Celery has logged how the task ended."""

import logging
import secrets
import time

from swrly.celery import app
from swrly.keys.redaction import REDACTED
from swrly.keys.secret import ProviderSecret, live_secrets

# A stand-in for a careless task, with a known key (its value is not secret: tests only).
CANARY = "canary-task-" + secrets.token_urlsafe(24)


@app.task(name="tests.runs.careless_task", ignore_result=True)
def careless_task() -> None:
    """Takes a key, lets it go, then fails with it in its message (as a careless library might)."""
    secret = ProviderSecret(CANARY)
    value = secret.reveal()
    secret.discard()  # released in a `finally`, as the executor does
    raise RuntimeError(f"upstream refused {value}")


def test_a_failed_tasks_log_is_redacted_after_its_keys_were_released(celery_worker, caplog):
    # given a real worker; when a task fails with a key in its exception, after releasing it
    with caplog.at_level(logging.INFO):
        careless_task.delay()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "upstream refused" not in caplog.text:
            time.sleep(0.05)
    # then Celery's failure log names the failure, not the key; the key is then forgotten
    assert "upstream refused" in caplog.text
    assert f"upstream refused {REDACTED}" in caplog.text
    assert CANARY not in caplog.text
    assert CANARY not in live_secrets()
