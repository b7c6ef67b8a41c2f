"""The bundle's cross-links (issue 12 §3, §4): blocked keys, where keys went, and the
verifier's `--fingerprint`, which computes what Swrly records for a key."""

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from runs.models import Run, StepRun
from swrly.audit.writer import Actor
from swrly.custody.models import BlockedKey, ProviderKey
from swrly.custody.services import blocked_key_add
from tenants.models import Role
from tests.evidence.conftest import (
    export_api,
    public_keys_file,
    read_zip,
    run_verifier,
    write_zip,
)

pytestmark = pytest.mark.usefixtures("audit_test_event")
SYSTEM = Actor.system("tests")
KEY = "sk-proj-evidence" + "q" * 30 + "Zz12"


def _key(tenant, provider, fingerprint):
    now = timezone.now()
    return ProviderKey.objects.create(
        tenant=tenant,
        provider=provider,
        fingerprint=fingerprint,
        hint="sk-…" + fingerprint[-4:],
        first_seen_at=now,
        last_seen_at=now,
        use_count=1,
    )


def _step(run, position, provider, scheme, host, port, attempts):
    return StepRun.objects.create(
        tenant=run.tenant,
        run=run,
        position=position,
        name=f"s{position}",
        provider=provider,
        model="m",
        destination_scheme=scheme,
        destination_host=host,
        destination_port=port,
        attempts=attempts,
    )


@pytest.fixture
def linked(acme, globex):
    """acme with a blocked and an unblocked key, and runs whose steps went to two places."""
    tenant = acme.tenant
    _key(tenant, "openai", "v2:" + "a" * 64)
    _key(tenant, "openai", "v2:" + "b" * 64)
    blocked_key_add(
        tenant=tenant,
        provider="openai",
        fingerprint="v2:" + "a" * 64,
        actor=SYSTEM,
        reason="leaked in a CI log",
    )
    blocked_key_add(  # blocked but never seen: listed, with no provider_keys row
        tenant=tenant, provider="anthropic", fingerprint="v2:" + "c" * 64, actor=SYSTEM
    )
    first, second = acme.run(), acme.run()
    _step(first, 0, "openai", "https", "api.openai.com", 443, 1)
    _step(first, 1, "openai", "https", "api.openai.com", 443, 3)  # retried twice
    _step(first, 2, "openai", "https", "proxy.example", 8443, 0)  # in flight: counts as one
    _step(second, 0, "openai", "https", "api.openai.com", 443, 1)
    _step(second, 1, "anthropic", "", "", None, 0)  # never sent: not a destination
    # a run created before the period, and another tenant's run, do not count
    old = acme.run()
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    _step(old, 0, "openai", "https", "old.example", 443, 1)
    _step(globex.run(), 0, "openai", "https", "globex.example", 443, 1)
    # a blocked key of another tenant is not listed
    blocked_key_add(
        tenant=globex.tenant, provider="openai", fingerprint="v2:" + "a" * 64, actor=SYSTEM
    )
    return acme


def test_provider_keys_say_which_key_is_blocked_and_when_and_why(linked):
    files = read_zip(export_api(linked))
    keys = {k["fingerprint"]: k for k in json.loads(files["provider_keys.json"])}
    entry = BlockedKey.objects.get(tenant=linked.tenant, provider="openai")

    blocked = keys["v2:" + "a" * 64]
    assert blocked["blocked"] is True
    assert blocked["blocked_reason"] == "leaked in a CI log"
    assert blocked["blocked_at"] == entry.created_at.isoformat(timespec="microseconds")
    assert keys["v2:" + "b" * 64]["blocked"] is False
    assert keys["v2:" + "b" * 64]["blocked_at"] is None


def test_the_bundle_lists_the_tenants_blocked_keys_and_the_manifest_hashes_them(linked):
    files = read_zip(export_api(linked))
    listed = {b["fingerprint"]: b for b in json.loads(files["blocked_keys.json"])}
    assert sorted((b["provider"], f) for f, b in listed.items()) == [
        ("anthropic", "v2:" + "c" * 64),
        ("openai", "v2:" + "a" * 64),
    ]
    leaked = listed["v2:" + "a" * 64]
    assert leaked["reason"] == "leaked in a CI log"
    assert leaked["blocked_by"] == SYSTEM.label
    assert leaked["blocked_at"] is not None
    manifest = json.loads(files["manifest.json"])
    names = {f["name"] for f in manifest["files"]}
    assert {"blocked_keys.json", "destinations.json"} <= names


def test_destinations_count_the_periods_requests_per_provider_and_place(linked):
    files = read_zip(export_api(linked))
    body = json.loads(files["destinations.json"])
    assert body["destinations"] == [
        {
            "provider": "openai",
            "destination": "https://api.openai.com:443",
            "steps": 3,
            "requests": 5,
        },
        {
            "provider": "openai",
            "destination": "https://proxy.example:8443",
            "steps": 1,
            "requests": 1,
        },
    ]


def test_the_verifier_reports_destinations_and_names_an_altered_destinations_file(
    linked, bare_python, tmp_path
):
    keys = public_keys_file(tmp_path)
    path = tmp_path / "bundle.zip"
    path.write_bytes(export_api(linked))
    verdict = run_verifier(bare_python, str(path), "--public-keys", str(keys))
    assert verdict.status == 0, verdict.out
    assert "Sent to: openai at https://api.openai.com:443: 5 request(s) in 3 step(s)" in (
        verdict.out
    )
    assert "Blocked keys: 2" in verdict.out

    # hiding a destination is named, like any altered file
    files = read_zip(path.read_bytes())
    body = json.loads(files["destinations.json"])
    body["destinations"] = body["destinations"][:1]
    files["destinations.json"] = json.dumps(body).encode()
    tampered = tmp_path / "tampered.zip"
    tampered.write_bytes(write_zip(files))
    verdict = run_verifier(bare_python, str(tampered), "--public-keys", str(keys))
    assert verdict.status == 1
    assert "file destinations.json: its SHA-256 does not match the manifest (altered)" in (
        verdict.out
    )


def test_the_verifiers_fingerprint_is_what_swrly_recorded_for_a_run(
    acme, bare_python, settings, key_store
):
    # given a run whose key Swrly fingerprinted, and the salt as the customer reads it
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
    created = acme.api(Role.DEVELOPER).post(
        reverse("api:run-list"),
        {"workflow": str(acme.workflow().pk), "provider_keys": {"sandbox": KEY}},
        "application/json",
    )
    assert created.status_code == 202, created.content
    recorded = Run.objects.get(tenant=acme.tenant).key_fingerprints["sandbox"]["fingerprint"]
    salt = acme.api(Role.AUDITOR).get(reverse("api:provider-key-salt")).json()["salt"]

    # when the customer runs the standalone verifier, key on stdin
    verdict = run_verifier(
        bare_python, "--fingerprint", "--salt", salt, "--provider", "sandbox", stdin=KEY + "\n"
    )

    # then it prints exactly the fingerprint Swrly recorded, and nothing else
    assert verdict.status == 0, verdict.out
    assert verdict.out == recorded + "\n"
    assert KEY not in verdict.out
    other = run_verifier(
        bare_python, "--fingerprint", "--salt", salt, "--provider", "openai", stdin=KEY + "\n"
    )
    assert other.out.strip() != recorded


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--fingerprint", "--provider", "sandbox"], KEY, "needs --salt and --provider"),
        (["--fingerprint", "--salt", "ab" * 16], KEY, "needs --salt and --provider"),
        (["--fingerprint", "--salt", "zz", "--provider", "x"], KEY, "64 hex characters"),
        (["--fingerprint", "--salt", "ab" * 31, "--provider", "x"], KEY, "64 hex characters"),
        (["--fingerprint", "--salt", "ab" * 32, "--provider", "x"], "", "no key on standard"),
        ([], "", "the bundle is required"),
    ],
)
def test_fingerprint_usage_errors_exit_2(bare_python, args, stdin, message):
    verdict = run_verifier(bare_python, *args, stdin=stdin)
    assert verdict.status == 2
    assert message in verdict.out
