"""Behind a proxy: one client address for throttles, lockout and audit; forged headers ignored;
rate-limit counts that hold when many web processes count at once."""

import threading

import pytest
import time_machine
from django.core import checks
from django.test import Client, RequestFactory
from django_redis import get_redis_connection

from swrly.audit.models import AuditEvent
from swrly.http import client_ip
from swrly.ratelimit import over_limit
from tenants.models import Role

PROXY = "10.1.2.3"


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]
    return settings


def _ip(remote, forwarded=None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return client_ip(RequestFactory().get("/", REMOTE_ADDR=remote, **headers))


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        (PROXY, "203.0.113.7", "203.0.113.7"),  # one proxy
        (PROXY, "203.0.113.7, 10.9.9.9", "203.0.113.7"),  # two proxies
        (PROXY, "6.6.6.6, 203.0.113.7", "203.0.113.7"),  # a forged hop on the left is ignored
        (PROXY, "203.0.113.7, not-an-ip", PROXY),  # garbage stops the walk at the last good hop
        (PROXY, "", PROXY),
        (PROXY, None, PROXY),
        (PROXY, "10.4.4.4", "10.4.4.4"),  # every hop a proxy: the leftmost is the client
        ("198.51.100.1", "203.0.113.7", "198.51.100.1"),  # an untrusted peer's header is ignored
        ("fd00::1", "2001:db8::5", "2001:db8::5"),
        ("::ffff:10.1.2.3", "203.0.113.7", "203.0.113.7"),  # IPv4 seen through an IPv6 socket
    ],
)
def test_the_client_address_is_the_first_untrusted_hop_from_the_right(
    behind_proxy, remote, forwarded, expected
):
    assert _ip(remote, forwarded) == expected


def test_without_trusted_proxies_the_header_is_ignored(settings):
    settings.TRUSTED_PROXIES = []
    assert _ip(PROXY, "203.0.113.7") == PROXY


def test_an_invalid_trusted_proxy_entry_stops_start_up(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "proxy.example"]
    errors = [e for e in checks.run_checks(tags=["swrly_startup"]) if e.id == "swrly.E006"]
    assert len(errors) == 1
    assert "proxy.example" in errors[0].msg


def test_throttle_lockout_and_audit_see_the_forwarded_client(acme, behind_proxy):
    behind_proxy.API_RATE_PER_IP = "2/min"
    # two clients behind the same proxy have their own API rate...
    first = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.20")
    second = Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.21")
    assert [first.get("/api/v1/me/").status_code for _ in range(3)] == [401, 401, 429]
    assert second.get("/api/v1/me/").status_code == 401
    # ...their own sign-in lockout...
    owner = acme.users[Role.OWNER]
    for _ in range(6):
        first.post("/accounts/login/", {"username": owner.username, "password": "wrong"})
    owner.set_password("right horse battery staple")
    owner.save()
    response = second.post(
        "/accounts/login/", {"username": owner.username, "password": "right horse battery staple"}
    )
    assert response.status_code == 302  # not locked out by the other client's failures
    # ...and the audit log names the client, not the proxy
    failed = AuditEvent.objects.filter(tenant=acme.tenant, action="auth.login_failed").first()
    login = AuditEvent.objects.filter(tenant=acme.tenant, action="auth.login").get()
    assert failed.ip == "203.0.113.20"
    assert login.ip == "203.0.113.21"


def test_rate_limit_counts_hold_under_concurrent_processes(db):
    # 8 threads, each with its own Redis connection, count 40 requests each against 100/min
    get_redis_connection("default").delete(
        *get_redis_connection("default").keys("swrly:ratelimit:race:*") or ["-"]
    )
    allowed = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def hammer():
        barrier.wait()
        mine = sum(over_limit(scope="race", ident="one", rate="100/min") is None for _ in range(40))
        with lock:
            allowed.append(mine)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    with time_machine.travel("2026-06-01 12:00:30+00:00", tick=False):  # one window for all
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(allowed) == 100
