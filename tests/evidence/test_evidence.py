"""The evidence bundle, exported for real and checked by the standalone verifier in a
subprocess that cannot import Django; then each part tampered with, one at a time."""

import json
import zipfile
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from swrly.audit.checkpoints import audit_checkpoint_chain
from swrly.audit.models import AuditCheckpoint, AuditEvent
from swrly.audit.writer import Actor, audit_record, chain_for
from swrly.custody.models import KeyRotation, KeyRotationTenant, ProviderKey
from tenants.models import Role
from tests.evidence.conftest import (
    export_api,
    lines,
    public_keys_file,
    read_zip,
    resign,
    run_verifier,
    today,
    unlines,
    write_zip,
)

pytestmark = pytest.mark.usefixtures("audit_test_event")
SYSTEM = Actor.system("tests")


def _events(tenant, n):
    for i in range(n):
        audit_record(tenant=tenant, action="test.event", actor=SYSTEM, metadata={"i": i})


@pytest.fixture
def history(acme):
    """acme with events, two signed checkpoints, events after them, a key and a rotation."""
    tenant = acme.tenant
    _events(tenant, 3)
    audit_checkpoint_chain(chain_for(tenant))
    _events(tenant, 4)
    audit_checkpoint_chain(chain_for(tenant))
    _events(tenant, 2)
    now = timezone.now()
    ProviderKey.objects.create(
        tenant=tenant,
        provider="openai",
        fingerprint="f" * 64,
        hint="sk-…ffff",
        first_seen_at=now,
        last_seen_at=now,
        use_count=1,
    )
    rotation = KeyRotation.objects.create(started_at=now, actor="system:t", to_key_id="k2")
    KeyRotationTenant.objects.create(rotation=rotation, tenant=tenant, rewrapped=5)
    acme.run()
    return acme


@pytest.fixture
def bundle(history, tmp_path):
    path = tmp_path / "bundle.zip"
    path.write_bytes(export_api(history))
    return path


@pytest.fixture
def keys(tmp_path):
    return public_keys_file(tmp_path)


def _verify(bare_python, path, keys, data=None):
    if data is not None:
        path = path.with_name("tampered.zip")
        path.write_bytes(data)
    return run_verifier(bare_python, str(path), "--public-keys", str(keys))


def test_the_verifier_cannot_import_django(bare_python):
    done = run_verifier(bare_python, "--help")
    assert done.status == 0, done.out
    probe = bare_python / "probe.py"
    probe.write_text("import django\n")
    assert run_verifier(bare_python, "--help").status == 0
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-I", "-S", str(probe)], env={}, capture_output=True, check=False
    )
    assert b"ModuleNotFoundError" in result.stderr


def test_an_exported_bundle_verifies_offline(bare_python, bundle, keys, history):
    verdict = _verify(bare_python, bundle, keys)

    assert verdict.status == 0, verdict.out
    assert "OK:" in verdict.out
    events = AuditEvent.objects.filter(tenant=history.tenant).order_by("seq")
    exported = events.exclude(action="evidence.exported")
    assert f"Events: {exported.count()}, #1 to #{exported.last().seq}" in verdict.out
    checkpoints = AuditCheckpoint.objects.filter(chain=chain_for(history.tenant))
    assert f"Checkpoints: {checkpoints.count()}" in verdict.out
    assert "2 matched a signed checkpoint" in verdict.out
    assert f"Period: {today()} to {today()}" in verdict.out


def test_the_bundle_holds_every_part(bundle, history):
    files = read_zip(bundle.read_bytes())
    assert set(files) == {
        "events.jsonl",
        "checkpoints.jsonl",
        "public_keys.json",
        "key_rotations.json",
        "provider_keys.json",
        "blocked_keys.json",
        "destinations.json",
        "runs_summary.json",
        "manifest.json",
        "manifest.sig",
    }
    manifest = json.loads(files["manifest.json"])
    assert manifest["tenant"]["slug"] == "acme"
    assert manifest["server_check"]["events_mismatched"] == []
    assert manifest["server_check"]["chain_ok"] is True
    events = lines(files["events.jsonl"])
    assert manifest["server_check"]["events_recomputed"] == len(events)
    assert {"prev_hash", "hash", "hash_version", "key_id", "actor_user_id"} <= set(events[0])
    assert [c["seq"] for c in lines(files["checkpoints.jsonl"])] == [
        c.seq for c in AuditCheckpoint.objects.filter(chain=chain_for(history.tenant))
    ]
    (rotation,) = json.loads(files["key_rotations.json"])
    assert rotation["rewrapped_in_tenant"] == 5
    (key,) = json.loads(files["provider_keys.json"])
    assert (key["fingerprint"], key["runs"]) == ("f" * 64, 0)
    summary = json.loads(files["runs_summary.json"])
    assert summary["totals"] == {"queued": 1}
    assert summary["days"] == [{"day": today(), "by_status": {"queued": 1}}]
    # the export is audited, and the bundle holds only what was recorded before it
    exported = AuditEvent.objects.get(tenant=history.tenant, action="evidence.exported")
    assert exported.metadata == {"from": today(), "to": today(), "via": "api"}
    assert manifest["export_event_seq"] == exported.seq
    assert events[-1]["seq"] == exported.seq - 1


def test_no_key_material_beyond_public_keys(bundle, settings):
    raw = b"".join(read_zip(bundle.read_bytes()).values())
    for secret in (settings.AUDIT_SIGNING_KEY, settings.AUDIT_CHAIN_KEY, settings.SECRET_KEY):
        assert secret.encode() not in raw


# --- tampering: each case names what failed, and exits 1 -------------------------------------


def _failed(verdict, *expected):
    assert verdict.status == 1, verdict.out
    first = verdict.out.split("First failure: ", 1)[1].splitlines()[0]
    for text in expected:
        assert text in verdict.out, verdict.out
    return first


def _tamper_events(files, change):
    rows = lines(files["events.jsonl"])
    change(rows)
    return {**files, "events.jsonl": unlines(rows)}


def test_a_changed_event_is_named(bare_python, bundle, keys):
    files = read_zip(bundle.read_bytes())

    def change(rows):
        rows[4]["actor"] = "user:someone-else"

    tampered = _tamper_events(files, change)
    first = _failed(_verify(bare_python, bundle, keys, write_zip(tampered)))
    assert first == "file events.jsonl: its SHA-256 does not match the manifest (altered)"

    def change_hash(rows):
        rows[4]["hash"] = "1" * 64

    # even re-signed by Swrly's own key, the links and checkpoints name the event
    resigned = resign(_tamper_events(files, change_hash))
    seq = lines(files["events.jsonl"])[4]["seq"]
    first = _failed(
        _verify(bare_python, bundle, keys, write_zip(resigned)),
        f"event #{seq + 1}: its previous-hash link does not match event #{seq}",
    )
    assert first.startswith(f"event #{seq}") or first.startswith(f"event #{seq + 1}")


def test_a_dropped_event_is_named(bare_python, bundle, keys):
    files = read_zip(bundle.read_bytes())
    rows = lines(files["events.jsonl"])
    dropped = rows[3]["seq"]

    tampered = resign(_tamper_events(files, lambda rows: rows.pop(3)))
    first = _failed(_verify(bare_python, bundle, keys, write_zip(tampered)))
    assert first.startswith(
        f"event #{dropped + 1}: sequence gap or reordering: expected #{dropped}"
    )


def test_reordered_events_are_named(bare_python, bundle, keys):
    files = read_zip(bundle.read_bytes())

    def swap(rows):
        rows[2], rows[3] = rows[3], rows[2]

    seq = lines(files["events.jsonl"])[3]["seq"]
    first = _failed(
        _verify(bare_python, bundle, keys, write_zip(resign(_tamper_events(files, swap))))
    )
    assert first.startswith(f"event #{seq}: sequence gap or reordering")


def test_a_file_whose_hash_mismatches_is_named(bare_python, bundle, keys):
    files = read_zip(bundle.read_bytes())
    rotations = json.loads(files["key_rotations.json"])
    rotations[0]["rewrapped_in_tenant"] = 0
    files["key_rotations.json"] = json.dumps(rotations).encode()
    first = _failed(_verify(bare_python, bundle, keys, write_zip(files)))
    assert first == "file key_rotations.json: its SHA-256 does not match the manifest (altered)"


def test_an_added_file_is_named(bare_python, bundle, keys):
    files = {**read_zip(bundle.read_bytes()), "extra.json": b"{}"}
    first = _failed(_verify(bare_python, bundle, keys, write_zip(files)))
    assert first == "file extra.json: in the bundle but not listed in the manifest (added)"


def test_an_altered_manifest_is_named(bare_python, bundle, keys):
    files = read_zip(bundle.read_bytes())
    manifest = json.loads(files["manifest.json"])
    manifest["period"]["from"] = "2020-01-01"
    files["manifest.json"] = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    first = _failed(_verify(bare_python, bundle, keys, write_zip(files)))
    assert first.startswith("manifest signature: the signature by key ")
    assert first.endswith("does not verify")


def test_a_manifest_signed_by_another_key_is_named(bare_python, bundle, keys):
    files = read_zip(bundle.read_bytes())
    forged = resign(files, Ed25519PrivateKey.generate())
    first = _failed(_verify(bare_python, bundle, keys, write_zip(forged)))
    assert first.startswith("manifest signature: signed by key ")
    assert first.endswith("which is not a published key")


def test_a_forger_listing_their_own_key_passes_only_without_the_published_keys(
    bare_python, bundle, keys
):
    from cryptography.hazmat.primitives import serialization

    forger = Ed25519PrivateKey.generate()
    raw = forger.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    import base64

    files = read_zip(bundle.read_bytes())
    files["public_keys.json"] = json.dumps(
        {"keys": [{"public_key": base64.urlsafe_b64encode(raw).decode()}]}
    ).encode()
    files["checkpoints.jsonl"] = b""
    files = resign(files, forger)
    path = bundle.with_name("forged.zip")
    path.write_bytes(write_zip(files))

    alone = run_verifier(bare_python, str(path))
    assert "WARNING: keys taken from the bundle itself" in alone.out
    first = _failed(_verify(bare_python, path, keys))
    assert "which is not a published key" in first


def test_a_replaced_checkpoint_is_named(bare_python, bundle, keys, history):
    files = read_zip(bundle.read_bytes())
    rows = lines(files["checkpoints.jsonl"])
    rows[0]["head_hash"] = "2" * 64
    files["checkpoints.jsonl"] = unlines(rows)
    seq = rows[0]["seq"]
    _failed(
        _verify(bare_python, bundle, keys, write_zip(resign(files))),
        f"checkpoint at #{seq}: the signature by key",
        f"event #{seq}: its hash is not the one the checkpoint at #{seq} signed",
    )


def test_a_dropped_checkpoint_is_named(bare_python, bundle, keys):
    files = read_zip(bundle.read_bytes())
    rows = lines(files["checkpoints.jsonl"])
    dropped = rows.pop(0)["seq"]
    files["checkpoints.jsonl"] = unlines(rows)
    first = _failed(_verify(bare_python, bundle, keys, write_zip(resign(files))))
    assert first.startswith(
        f"event #{dropped + 1}: records a checkpoint at #{dropped} that is missing"
    )


def test_a_version_1_event_is_recomputed_offline(bare_python, tmp_path, keys, db):
    """Events written before the keyed chain: their SHA-256 is recomputed by the verifier."""
    from swrly.audit.models import AuditChainHead
    from swrly.audit.writer import GENESIS_HASH, event_hash
    from tenants.models import Tenant

    tenant = Tenant.objects.create(slug="legacy", name="Legacy")
    chain, prev = chain_for(tenant), GENESIS_HASH
    for seq in (1, 2, 3):
        fields = {
            "chain": chain,
            "seq": seq,
            "created_at": timezone.now(),
            "actor": "system:old",
            "actor_user_id": None,
            "action": "test.event",
            "target": "",
            "metadata": {"i": seq},
            "ip": None,
            "user_agent": "",
            "prev_hash": prev,
        }
        prev = event_hash(**fields)
        AuditEvent.objects.create(tenant=tenant, hash=prev, hash_version=1, **fields)
    AuditChainHead.objects.create(chain=chain, seq=3, last_hash=prev)
    _events(tenant, 2)
    audit_checkpoint_chain(chain)
    path = tmp_path / "legacy.zip"
    call_command("export-evidence", "legacy", "--from", today(), "--to", today(), "-o", str(path))

    verdict = _verify(bare_python, path, keys)
    assert verdict.status == 0, verdict.out
    assert "3 version-1 hashes recomputed" in verdict.out
    assert (
        AuditEvent.objects.get(tenant=tenant, action="evidence.exported").metadata["via"] == "cli"
    )

    files = read_zip(path.read_bytes())
    rows = lines(files["events.jsonl"])
    rows[1]["metadata"] = {"i": 99}
    files["events.jsonl"] = unlines(rows)
    first = _failed(_verify(bare_python, path, keys, write_zip(resign(files))))
    assert first == "event #2: content does not match its SHA-256 (altered)"


# --- the routes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"to": "2026-01-01"}, "from"),
        ({"from": "2026-01-01"}, "to"),
        ({"from": "2026-13-01", "to": "2026-01-01"}, "from"),
        ({"from": "2026-01-02", "to": "2026-01-01"}, "to"),
        ({"from": "2026-01-01", "to": "9999-12-31"}, "to"),
    ],
)
def test_a_bad_range_is_400_naming_the_field(acme, params, field):
    before = AuditEvent.objects.filter(action="evidence.exported").count()
    response = acme.api(Role.OWNER).get(reverse("api:evidence-list"), params)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == [field]
    assert AuditEvent.objects.filter(action="evidence.exported").count() == before


def test_a_period_without_events_verifies(bare_python, acme, tmp_path, keys):
    past = (timezone.now() - timedelta(days=30)).date().isoformat()
    path = tmp_path / "empty.zip"
    path.write_bytes(export_api(acme, start=past, end=past))
    verdict = _verify(bare_python, path, keys)
    assert verdict.status == 0, verdict.out
    assert "Events: none in the period" in verdict.out


def test_a_host_without_the_signing_key_refuses_before_recording(acme, settings):
    from swrly.audit.keys import public_key_of

    settings.AUDIT_SIGNING_PUBLIC_KEY = public_key_of(settings.AUDIT_SIGNING_KEY)
    settings.AUDIT_SIGNING_KEY = ""
    response = acme.api(Role.OWNER).get(
        reverse("api:evidence-list"), {"from": today(), "to": today()}
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "evidence_unavailable"
    assert not AuditEvent.objects.filter(action="evidence.exported").exists()


def test_the_audit_page_offers_the_bundle_and_the_verifier(history, bare_python, tmp_path, keys):
    client = history.client(Role.AUDITOR)
    page = client.get(reverse("tenants:audit-list", kwargs={"tenant_slug": "acme"}))
    bundle_url = reverse("evidence:bundle", kwargs={"tenant_slug": "acme"})
    verifier_url = reverse("evidence:verifier", kwargs={"tenant_slug": "acme"})
    assert f'action="{bundle_url}"'.encode() in page.content
    assert f'href="{verifier_url}"'.encode() in page.content

    download = client.get(bundle_url, {"from": today(), "to": today()})
    assert download.status_code == 200
    assert download["Content-Type"] == "application/zip"
    path = tmp_path / "page.zip"
    path.write_bytes(b"".join(download.streaming_content))
    assert zipfile.is_zipfile(path)
    assert _verify(bare_python, path, keys).status == 0
    assert AuditEvent.objects.filter(action="evidence.exported").last().metadata["via"] == "page"

    script = client.get(verifier_url)
    from tests.evidence.conftest import VERIFIER

    assert b"".join(script.streaming_content) == VERIFIER.read_bytes()
    assert client.get(bundle_url, {"from": "x", "to": today()}).status_code == 400


@pytest.mark.parametrize("role", [Role.DEVELOPER])
def test_developers_may_not_export_evidence_pages(acme, role):
    client = acme.client(role)
    url = reverse("evidence:bundle", kwargs={"tenant_slug": "acme"})
    assert client.get(url, {"from": today(), "to": today()}).status_code == 403
    assert (
        client.get(reverse("evidence:verifier", kwargs={"tenant_slug": "acme"})).status_code == 403
    )


def test_the_command_refuses_a_bad_range_and_an_unknown_tenant(acme, tmp_path):
    out = str(tmp_path / "x.zip")
    with pytest.raises(CommandError, match="--to: before from"):
        call_command(
            "export-evidence", "acme", "--from", "2026-02-02", "--to", "2026-02-01", "-o", out
        )
    with pytest.raises(CommandError, match="no tenant"):
        call_command("export-evidence", "nope", "--from", today(), "--to", today(), "-o", out)


def test_an_event_altered_in_the_database_fails_swrlys_own_check(
    bare_python, history, tmp_path, keys
):
    """A version-2 event rewritten in the database keeps its hash, which the verifier cannot
    recompute; Swrly's export recomputes it with the chain key and says so in the manifest."""
    from django.db import connection

    victim = AuditEvent.objects.filter(tenant=history.tenant, action="test.event").first()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # as the table owner: the trigger off
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("ALTER TABLE tenants_auditevent DISABLE TRIGGER USER")
        cursor.execute(
            "UPDATE tenants_auditevent SET actor = %s WHERE id = %s", ["user:forger", victim.pk]
        )
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE tenants_auditevent ENABLE TRIGGER USER")
    path = tmp_path / "altered.zip"
    path.write_bytes(export_api(history))

    manifest = json.loads(read_zip(path.read_bytes())["manifest.json"])
    assert manifest["server_check"]["events_mismatched"] == [victim.seq]
    first = _failed(_verify(bare_python, path, keys))
    assert first == (
        "Swrly's check at export: events whose content does not recompute to their hash with "
        f"the chain key: [{victim.seq}]"
    )
