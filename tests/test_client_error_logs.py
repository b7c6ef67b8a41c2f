"""Each 4xx is logged once, by its access line; a page's 403 logs no traceback.

Django logs every 4xx a second time (`django.request`: "Not Found: /x", a PermissionDenied
with its traceback; `django.security.csrf` for a CSRF failure), and with DEBUG on its own
console handler printed those records a third time. What the console shows is read here from
every stream handler a `django.request` record reaches.
"""

import io
import logging

import pytest
from django.test import Client
from django.urls import reverse

from tenants.models import Role


def _console_handlers() -> list[logging.StreamHandler]:
    """The stream handlers a django.request record reaches (pytest's own left out)."""
    handlers, logger = [], logging.getLogger("django.request")
    while logger is not None:
        handlers += [
            handler
            for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler)
            and not type(handler).__module__.startswith("_pytest")
        ]
        logger = logger.parent if logger.propagate else None
    return handlers


@pytest.fixture
def console(settings):
    """Everything the console handlers print, with DEBUG on as under `make run`."""
    settings.DEBUG = True
    buffer = io.StringIO()
    handlers = _console_handlers()
    assert handlers, "no console handler"
    previous = [handler.setStream(buffer) for handler in handlers]
    yield buffer
    for handler, stream in zip(handlers, previous, strict=True):
        handler.setStream(stream)


def _lines_about(output: str, path: str) -> list[str]:
    return [line for line in output.splitlines() if path in line]


def test_each_client_error_is_logged_once_without_a_traceback(acme, console):
    audit_page = reverse("tenants:audit-list", args=["acme"])
    developer = acme.client(Role.DEVELOPER)

    # when: a page's 403 (PermissionDenied), a 404, an API 401 and a CSRF failure
    assert developer.get(audit_page).status_code == 403
    assert developer.get("/no-such-page/").status_code == 404
    assert Client().get("/api/v1/runs/").status_code == 401
    csrf_checked = Client(enforce_csrf_checks=True)
    assert csrf_checked.post(reverse("login"), {"username": "x"}).status_code == 403

    # then: one line each, the access line, with Django's reason for the CSRF failure
    output = console.getvalue()
    assert "Traceback" not in output
    assert "PermissionDenied" not in output
    for path, status in (
        (audit_page, 403),
        ("/no-such-page/", 404),
        ("/api/v1/runs/", 401),
        (reverse("login"), 403),
    ):
        (line,) = _lines_about(output, path)
        assert "swrly.access" in line
        assert f" {path} {status} " in line
    (csrf_line,) = _lines_about(output, reverse("login"))
    assert "CSRF cookie not set." in csrf_line


def test_server_errors_keep_their_traceback(acme, console, monkeypatch):
    from django.test import Client as TestClient

    # given: a view that fails
    def explode(*args, **kwargs):
        raise RuntimeError("boom from the test")

    monkeypatch.setattr("swrly.health.HealthMiddleware.__call__", explode)

    # when
    response = TestClient(raise_request_exception=False).get("/readyz")

    # then: a 5xx is still logged by django.request with its traceback
    assert response.status_code == 500
    output = console.getvalue()
    assert "Traceback" in output
    assert "boom from the test" in output
