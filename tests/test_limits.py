"""Request limits: 413 for large bodies, 429 with Retry-After per token and per address."""

import time_machine
from django.test import Client

from tenants.models import Role


def test_a_body_over_the_limit_is_refused_with_413(acme, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = acme.api(Role.DEVELOPER).post(
        "/api/v1/workflows/", {"name": "x" * 2000, "steps": []}, "application/json"
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


@time_machine.travel("2026-06-01 12:00:30+00:00", tick=False)  # one rate window for the test
def test_a_token_over_its_rate_gets_429_with_retry_after(acme, settings):
    settings.API_RATE_PER_TOKEN = "3/min"
    api = acme.api(Role.AUDITOR)
    codes = [api.get("/api/v1/me/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = api.get("/api/v1/me/")
    assert response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) == 30  # the rest of the minute
    # another token is not affected
    assert acme.api(Role.OWNER).get("/api/v1/me/").status_code == 200


@time_machine.travel("2026-06-01 12:01:30+00:00", tick=False)
def test_an_address_over_its_rate_gets_429_even_without_a_valid_token(db, settings):
    settings.API_RATE_PER_IP = "2/min"
    client = Client(REMOTE_ADDR="203.0.113.9", headers={"Authorization": "Bearer swr_guess"})
    codes = [client.get("/api/v1/me/").status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    assert int(client.get("/api/v1/me/")["Retry-After"]) > 0
    assert Client(REMOTE_ADDR="203.0.113.10").get("/api/v1/me/").status_code == 401


def test_interactive_api_docs_use_local_assets_only(db):
    page = Client().get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn" not in html.lower()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "<script>" not in html  # the init script is a separate request (CSP)
    script = Client().get("/api/v1/docs/?script=")
    assert script.status_code == 200
    assert "/api/v1/schema/" in script.content.decode()
