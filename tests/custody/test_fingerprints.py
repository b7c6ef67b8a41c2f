"""Per-tenant (v2) fingerprints a customer computes, and the provider-key lookup by fingerprint."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from runs.models import Run
from swrly.audit.models import AuditEvent
from swrly.custody import services as custody_services
from swrly.custody.models import FingerprintSalt, ProviderKey
from swrly.custody.services import fingerprint_salt, key_fingerprints
from swrly.keys.fingerprint import (
    legacy_fingerprint,
    new_fingerprint_salt,
    tenant_fingerprint,
)
from tenants.models import Role

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
KEY = "sk-proj-fingerprint" + "q" * 30 + "Zz12"


def _one_liner() -> str:
    """The one-liner docs/security.md gives customers, exactly as written there."""
    block = DOC.read_text().split("<!-- fingerprint-one-liner:start -->")[1]
    block = block.split("<!-- fingerprint-one-liner:end -->")[0]
    (line,) = re.findall(r"^python3 -c .*$", block, re.M)
    return line


def _create_run(world, key: str = KEY):
    return world.api(Role.DEVELOPER).post(
        reverse("api:run-list"),
        {"workflow": str(world.workflow().pk), "provider_keys": {"sandbox": key}},
        "application/json",
    )


@pytest.fixture
def deposit_ok(settings, key_store):
    # An https address passes the egress rules; no worker calls it in these tests.
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
    return key_store


def test_v2_fingerprint_is_an_hmac_under_the_tenant_salt_and_differs_per_tenant(acme, globex):
    a, _ = key_fingerprints(tenant=acme.tenant, provider="sandbox", key=KEY)
    b, _ = key_fingerprints(tenant=globex.tenant, provider="sandbox", key=KEY)
    assert a.value.startswith("v2:")
    assert len(a.value) == 67
    assert a.value != b.value  # the same key in two tenants: unrelated fingerprints
    assert a == key_fingerprints(tenant=acme.tenant, provider="sandbox", key=KEY)[0]
    other_provider, _ = key_fingerprints(tenant=acme.tenant, provider="openai", key=KEY)
    assert other_provider.value != a.value
    assert a.value[3:] != legacy_fingerprint(provider="sandbox", key=KEY).value
    assert KEY not in a.value


def test_the_salt_is_made_once_per_tenant(acme):
    first = fingerprint_salt(tenant=acme.tenant)
    assert len(first) == 32
    assert fingerprint_salt(tenant=acme.tenant) == first
    assert FingerprintSalt.objects.filter(tenant=acme.tenant).count() == 1
    assert new_fingerprint_salt() != new_fingerprint_salt()
    with pytest.raises(ValueError, match="32 bytes"):
        tenant_fingerprint(provider="sandbox", key=KEY, salt=b"short")


def test_a_salt_is_remembered_in_the_process_only_once_committed(acme, transactional_db):
    # A salt made in a transaction that rolls back was never the tenant's: a concurrent call
    # may commit another one, so it must not be remembered.
    def made_then_rolled_back() -> None:
        with transaction.atomic():
            fingerprint_salt(tenant=acme.tenant)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        made_then_rolled_back()
    assert acme.tenant.pk not in custody_services._COMMITTED_SALTS
    assert not FingerprintSalt.objects.filter(tenant=acme.tenant).exists()
    salt = fingerprint_salt(tenant=acme.tenant)
    assert salt == bytes.fromhex(FingerprintSalt.objects.get(tenant=acme.tenant).salt)
    with CaptureQueriesContext(connection) as queries:
        assert fingerprint_salt(tenant=acme.tenant) == salt
    assert len(queries) == 0  # from memory: a salt never changes once committed


def test_a_run_records_v2_fingerprints_everywhere(acme, deposit_ok):
    response = _create_run(acme)
    assert response.status_code == 202, response.content
    expected = tenant_fingerprint(
        provider="sandbox", key=KEY, salt=fingerprint_salt(tenant=acme.tenant)
    ).value
    run = Run.objects.get(tenant=acme.tenant)
    assert run.key_fingerprints["sandbox"]["fingerprint"] == expected
    assert response.json()["key_fingerprints"]["sandbox"]["fingerprint"] == expected
    assert ProviderKey.objects.get(tenant=acme.tenant).fingerprint == expected
    deposited = AuditEvent.objects.get(tenant=acme.tenant, action="key.deposited")
    assert deposited.metadata["fingerprint"] == expected


@pytest.mark.skipif(shutil.which("bash") is None, reason="the documented one-liner runs in a shell")
def test_the_documented_one_liner_computes_what_swrly_recorded(acme, deposit_ok):
    # given a run, and the salt as the customer reads it from the API
    assert _create_run(acme).status_code == 202
    recorded = Run.objects.get(tenant=acme.tenant).key_fingerprints["sandbox"]["fingerprint"]
    salt = acme.api(Role.AUDITOR).get(reverse("api:provider-key-salt")).json()["salt"]

    # when the customer runs the documented one-liner on their own machine, key on stdin
    result = subprocess.run(
        ["bash", "-c", _one_liner()],
        input=KEY + "\n",
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SALT": salt, "PROVIDER": "sandbox"},
        check=True,
        timeout=30,
    )

    # then it prints the fingerprint Swrly recorded, which the lookup finds
    assert result.stdout.strip() == recorded
    found = acme.api(Role.AUDITOR).get(
        reverse("api:provider-key-list"), {"fingerprint": result.stdout.strip()}
    )
    assert [row["fingerprint"] for row in found.json()] == [recorded]


def test_the_salt_endpoint_answers_the_salt_and_how_to_use_it(acme):
    body = acme.api(Role.OWNER).get(reverse("api:provider-key-salt")).json()
    assert body["salt"] == fingerprint_salt(tenant=acme.tenant).hex()
    assert body["version"] == 2
    assert acme.api(Role.DEVELOPER).get(reverse("api:provider-key-salt")).status_code == 403


def test_lookup_by_fingerprint_says_whether_and_when_a_key_was_seen(acme, deposit_ok):
    assert _create_run(acme).status_code == 202
    (key,) = ProviderKey.objects.filter(tenant=acme.tenant)
    api = acme.api(Role.AUDITOR)
    url = reverse("api:provider-key-list")

    (row,) = api.get(url, {"fingerprint": key.fingerprint}).json()
    assert (
        row["first_seen_at"]
        == row["last_seen_at"]
        == key.first_seen_at.isoformat().replace("+00:00", "Z")
    )
    assert row["use_count"] == 1
    # bare hex: the v2 value without its prefix (or a legacy value) is found too
    assert api.get(url, {"fingerprint": key.fingerprint[3:].upper()}).json()[0]["id"] == row["id"]
    assert api.get(url, {"fingerprint": "v2:" + "0" * 64}).json() == []
    bad = api.get(url, {"fingerprint": key.fingerprint[:20]})
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {
        "fingerprint": ['"v2:" and 64 hex characters, or 64 hex characters']
    }


def test_legacy_fingerprints_stay_readable_and_findable(acme):
    from django.utils import timezone

    legacy = legacy_fingerprint(provider="sandbox", key=KEY)
    now = timezone.now()
    ProviderKey.objects.create(
        tenant=acme.tenant,
        provider="sandbox",
        fingerprint=legacy.value,
        hint=legacy.hint,
        first_seen_at=now,
        last_seen_at=now,
        use_count=3,
    )
    (row,) = (
        acme.api(Role.AUDITOR)
        .get(reverse("api:provider-key-list"), {"fingerprint": legacy.value})
        .json()
    )
    assert row["use_count"] == 3
    page = acme.client(Role.AUDITOR).get(reverse("custody:key-history", args=["acme"]))
    assert "(legacy v1)" in page.content.decode()
    # the runs page's fingerprint filter accepts both forms
    runs_page = acme.client(Role.AUDITOR).get(
        reverse("runs:run-list", args=["acme"]), {"fingerprint": "v2:" + "ab" * 8}
    )
    assert runs_page.status_code == 200
    assert b"A fingerprint is" not in runs_page.content


def test_the_key_history_page_shows_the_documented_one_liner_with_the_salt(acme):
    import html

    page = acme.client(Role.AUDITOR).get(reverse("custody:key-history", args=["acme"]))
    text = html.unescape(page.content.decode())
    assert f"export SALT={fingerprint_salt(tenant=acme.tenant).hex()} PROVIDER=" in text
    assert _one_liner() in text


def test_the_runs_page_filters_by_a_v2_fingerprint_with_or_without_its_prefix(acme, deposit_ok):
    run_id = _create_run(acme).json()["id"]
    other = _create_run(acme, "sk-proj-other" + "o" * 30 + "Ot99").json()["id"]
    recorded = Run.objects.get(pk=run_id).key_fingerprints["sandbox"]["fingerprint"]
    client = acme.client(Role.AUDITOR)
    for given in (recorded, recorded[3:], recorded[:15]):
        html = client.get(reverse("runs:run-list", args=["acme"]), {"fingerprint": given})
        body = html.content.decode()
        assert f'data-run-id="{run_id}"' in body, given
        assert f'data-run-id="{other}"' not in body, given
