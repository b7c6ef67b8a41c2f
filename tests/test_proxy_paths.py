"""Behind a proxy, continued: the forms proxies write hops in, forged and garbage headers from
every kind of peer, IPv6 and chains end to end (rate limit, lockout, audit), X-Forwarded-Proto,
and one rate-limit counter shared by two web processes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import time_machine
from axes.models import AccessAttempt
from django.core import checks
from django.test import Client, RequestFactory
from django_redis import get_redis_connection

from swrly.audit.models import AuditEvent
from swrly.http import client_ip
from tenants.models import Role

PROXY = "10.1.2.3"
OUTSIDER = "198.51.100.9"  # a peer that is no proxy of ours
# Start every end-to-end test at the beginning of a minute: its API_RATE_PER_IP window ("N/min")
# cannot end between two of its requests.
MINUTE_START = "2030-01-01 12:00:00+00:00"


def _ip(remote, forwarded=None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return client_ip(RequestFactory().get("/", REMOTE_ADDR=remote, **headers))


@pytest.fixture(autouse=True)
def _fresh_counters():
    """The end-to-end tests share fixed windows and addresses: each starts with no counts."""
    redis = get_redis_connection("default")
    for key in redis.scan_iter("swrly:ratelimit:*"):
        redis.delete(key)


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]
    return settings


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        # hops as proxies write them: with a port, IPv6 in brackets, spaces
        (PROXY, "203.0.113.7:41234", "203.0.113.7"),
        (PROXY, "[2001:db8::5]:443", "2001:db8::5"),
        (PROXY, "[2001:db8::5]", "2001:db8::5"),
        (PROXY, "  203.0.113.7 ,   10.9.9.9  ", "203.0.113.7"),
        ("fd00::1", "2001:db8::5, [fd00::2]:8080, 10.0.0.9:443", "2001:db8::5"),
        # a zone names the writer's interface; the address is the client
        (PROXY, "fe80::7%eth0", "fe80::7"),
        # chains: every trusted hop from the right is skipped, whatever the family
        (PROXY, "203.0.113.7, 10.0.0.5, 10.0.0.6", "203.0.113.7"),
        ("fd00::1", "203.0.113.7, fd00::2, 10.0.0.9", "203.0.113.7"),
        (PROXY, "6.6.6.6, 7.7.7.7, 203.0.113.7, 10.0.0.5", "203.0.113.7"),
        # garbage: the walk stops at the last good hop, never past it
        (PROXY, "unknown", PROXY),
        (PROXY, "203.0.113.7,", PROXY),
        (PROXY, ",,,", PROXY),
        (PROXY, "203.0.113.7:99999999", PROXY),
        (PROXY, "203.0.113.7:", PROXY),
        (PROXY, "[2001:db8::5", PROXY),
        (PROXY, "[2001:db8::5]x", PROXY),
        (PROXY, "203.0.113.7\x00", PROXY),
        (PROXY, "\uff12\uff10\uff13.0.113.7", PROXY),  # full-width digits are not an address
        (PROXY, "203.0.113.7, _hidden, 10.0.0.5", "10.0.0.5"),
        (PROXY, "x" * 20000, PROXY),
        (PROXY, "203.0.113.7 10.0.0.5", PROXY),
        # an untrusted peer: its header is never read, however plausible
        (OUTSIDER, "203.0.113.7", OUTSIDER),
        (OUTSIDER, "203.0.113.7, 10.0.0.1", OUTSIDER),
        ("2001:db8::9", "203.0.113.7", "2001:db8::9"),
        ("[2001:db8::9]", "203.0.113.7", "2001:db8::9"),
        ("not-an-address", "203.0.113.7", None),  # no peer address: no client address at all
        # the peer itself may carry a zone (a link-local socket peer)
        ("fe80::1%eth0", "203.0.113.7", "fe80::1"),
    ],
)
def test_hops_in_every_form_proxies_write(behind_proxy, remote, forwarded, expected):
    assert _ip(remote, forwarded) == expected


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0", "1.2.3.4/0"])
def test_trusting_every_address_stops_start_up(settings, everyone):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", everyone]
    errors = [e for e in checks.run_checks(tags=["swrly_startup"]) if e.id == "swrly.E006"]
    assert len(errors) == 1
    assert "trusts every address" in errors[0].msg


def test_proxy_networks_pass_the_start_up_check(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "172.16.0.0/12", "fd00::/8", "192.0.2.10"]
    assert not [e for e in checks.run_checks(tags=["swrly_startup"]) if e.id == "swrly.E006"]


def test_the_answer_is_worked_out_once_per_request(behind_proxy):
    request = RequestFactory().get("/", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert client_ip(request) == "203.0.113.7"
    request.META["HTTP_X_FORWARDED_FOR"] = "203.0.113.8"  # later changes are not seen
    assert client_ip(request) == "203.0.113.7"


def _fail_logins(client_for, username, count):
    for n in range(count):
        client_for(n).post("/accounts/login/", {"username": username, "password": "wrong"})


@pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8", "fd00::/8"]], ids=["none", "others"])
def test_a_forged_header_from_an_untrusted_peer_changes_nothing(acme, settings, trusted):
    """Rate limit bucket, lockout and audit all stay on REMOTE_ADDR, whatever the header says."""
    settings.TRUSTED_PROXIES = trusted
    settings.API_RATE_PER_IP = "2/min"

    def forged(n):  # a new forged client address (and a trusted-looking hop) every request
        return Client(REMOTE_ADDR=OUTSIDER, HTTP_X_FORWARDED_FOR=f"203.0.113.{n + 1}, 10.0.0.1")

    with time_machine.travel(MINUTE_START, tick=True):
        assert [forged(n).get("/api/v1/me/").status_code for n in range(3)] == [401, 401, 429]
        owner = acme.users[Role.OWNER]
        owner.set_password("right horse battery staple")
        owner.save()
        _fail_logins(forged, owner.username, settings.AXES_FAILURE_LIMIT)
        response = forged(99).post(
            "/accounts/login/",
            {"username": owner.username, "password": "right horse battery staple"},
        )
    assert response.status_code == 429  # axes: locked out for (username, REMOTE_ADDR)
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {OUTSIDER}
    failed = AuditEvent.objects.filter(tenant=acme.tenant, action="auth.login_failed")
    assert set(failed.values_list("ip", flat=True)) == {OUTSIDER}
    assert not AuditEvent.objects.filter(tenant=acme.tenant, action="auth.login").exists()


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("fd00::10", "2001:db8::20", "2001:db8::20"),  # IPv6 proxy, IPv6 client
        (PROXY, "[2001:db8::21]:51234, 10.0.0.7", "2001:db8::21"),  # two proxies, ports
        ("fd00::10", "203.0.113.30:4711, fd00::11", "203.0.113.30"),  # mixed families
    ],
)
def test_behind_trusted_proxies_all_three_see_the_client(
    acme, behind_proxy, peer, forwarded, client
):
    behind_proxy.API_RATE_PER_IP = "2/min"
    via_proxy = Client(REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    neighbour = Client(REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR="203.0.113.99")  # same proxy
    owner = acme.users[Role.OWNER]
    with time_machine.travel(MINUTE_START, tick=True):
        assert [via_proxy.get("/api/v1/me/").status_code for _ in range(3)] == [401, 401, 429]
        assert neighbour.get("/api/v1/me/").status_code == 401  # a bucket of its own
        _fail_logins(lambda n: via_proxy, owner.username, behind_proxy.AXES_FAILURE_LIMIT)
        assert (
            via_proxy.post("/accounts/login/", {"username": owner.username, "password": "x"})
        ).status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {client}
    failed = AuditEvent.objects.filter(tenant=acme.tenant, action="auth.login_failed")
    assert set(failed.values_list("ip", flat=True)) == {client}
    # the neighbour behind the same proxy is not locked out
    response = neighbour.post("/accounts/login/", {"username": owner.username, "password": "x"})
    assert response.status_code == 200
    assert AccessAttempt.objects.filter(ip_address="203.0.113.99").get().failures_since_start == 1


@pytest.mark.parametrize(
    ("peer", "forwarded", "recorded"),
    [
        (PROXY, "unknown, \x7f, [::1", PROXY),  # garbage from a proxy: the proxy, not a 500
        ("fe80::1%eth0", None, "fe80::1"),  # a zone PostgreSQL's inet would refuse
        (PROXY, "fe80::2%25eth1", "fe80::2"),
    ],
)
def test_garbage_and_zones_are_stored_as_addresses(acme, behind_proxy, peer, forwarded, recorded):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    response = Client(REMOTE_ADDR=peer, **headers).post(
        "/accounts/login/", {"username": acme.users[Role.OWNER].username, "password": "wrong"}
    )
    assert response.status_code == 200  # the form again, with its error
    failed = AuditEvent.objects.filter(tenant=acme.tenant, action="auth.login_failed").get()
    assert failed.ip == recorded
    assert AccessAttempt.objects.get().ip_address == recorded


def test_x_forwarded_proto_is_not_believed_by_default(db, settings):
    # TRUST_X_FORWARDED_PROTO is off by default (and in tests): a forged header is no HTTPS
    assert settings.SECURE_PROXY_SSL_HEADER is None
    settings.SECURE_SSL_REDIRECT = True
    response = Client().get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 301
    assert response["Location"].startswith("https://")


def test_x_forwarded_proto_from_the_proxy_makes_the_request_secure(db, settings):
    # the value swrly/settings.py sets for TRUST_X_FORWARDED_PROTO=True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    assert Client().get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 200
    assert Client().get("/accounts/login/", HTTP_X_FORWARDED_PROTO="http").status_code == 301


_OTHER_WEB_PROCESS = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    import time_machine
    from django.test import Client
    from django.test.utils import override_settings

    peer, forwarded, when, count = sys.argv[1:5]
    with override_settings(TRUSTED_PROXIES=["10.0.0.0/8"], API_RATE_PER_IP="10/min"):
        with time_machine.travel(when, tick=False):
            client = Client(REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
            codes = [client.get("/api/v1/me/").status_code for _ in range(int(count))]
    print(json.dumps(codes))
    """
)


def test_two_web_processes_share_one_counter_per_client(db, settings, tmp_path):
    """Another Django process on the same cache Redis counts the same client in the same bucket:
    the limit holds across web instances, and the forwarded client is the bucket there too."""
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    settings.API_RATE_PER_IP = "10/min"
    when = "2030-01-01 12:00:30+00:00"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "swrly.settings",
        # the same cache Redis (REDIS_URL, inherited); a database of its own that it never needs
        "DATABASE_URL": f"sqlite:///{tmp_path / 'other.sqlite3'}",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    with time_machine.travel(when, tick=False):
        here = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.50")
        first = [here.get("/api/v1/me/").status_code for _ in range(6)]
    other = subprocess.run(
        [sys.executable, "-c", _OTHER_WEB_PROCESS, "10.0.0.2", "203.0.113.50", when, "6"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    second = json.loads(other.stdout.strip().splitlines()[-1])
    assert first == [401] * 6
    assert second == [401] * 4 + [429] * 2  # 6 + 4 = the 10 allowed, counted once
