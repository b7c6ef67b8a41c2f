"""Request limits: 413 for large bodies, 429 with Retry-After per token and per address."""

from unittest import mock

import redis
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


@time_machine.travel("2026-06-01 12:02:30+00:00", tick=False)
def test_both_rate_limits_cost_one_redis_round_trip_per_request(acme, settings):
    """The per-address and per-token counters of a request go to Redis together: one send on
    the wire (issue 13: two checks, two round trips before), and a throttled token answers 429
    before any database work."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.API_RATE_PER_IP = "100/min"
    settings.API_RATE_PER_TOKEN = "2/min"
    sends: list[bytes] = []
    real_send = redis.connection.Connection.send_packed_command

    def send(self, command, check_health=True):
        parts = [command] if isinstance(command, bytes | memoryview | str) else command
        packed = b"".join(bytes(p) if not isinstance(p, str) else p.encode() for p in parts)
        if b"swrly:ratelimit:" in packed:
            sends.append(packed)
        return real_send(self, command, check_health)

    api = acme.api(Role.AUDITOR)
    with mock.patch.object(redis.connection.Connection, "send_packed_command", send):
        assert api.get("/api/v1/me/").status_code == 200
        [one] = sends
        assert one.count(b"INCR") == 2
        assert b"swrly:ratelimit:ip:" in one
        assert b"swrly:ratelimit:token:" in one
        assert acme.tokens[Role.AUDITOR].encode() not in one  # only a digest names the token
        assert api.get("/api/v1/me/").status_code == 200
        with CaptureQueriesContext(connection) as queries:
            throttled = api.get("/api/v1/me/")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["message"] == "Too many requests with this token."
    assert len(sends) == 3
    assert len(queries) == 0
