"""The key blocklist: a blocked key never reaches the key store, and runs holding it stop."""

import logging
import secrets

import pytest
from django.db import connection
from django.urls import reverse

from runs.models import Run, RunStatus
from swrly.audit.models import AuditEvent
from swrly.custody.models import BlockedKey
from swrly.custody.services import key_fingerprints
from swrly.keys.fingerprint import legacy_fingerprint
from tenants.models import Role

KEY = "sk-proj-blocked" + "b" * 30 + "Bk01"
OTHER = "sk-proj-fine" + "f" * 30 + "Ok02"
URL = "/api/v1/blocked-keys/"


@pytest.fixture
def deposit_ok(settings, key_store):
    # An https address passes the egress rules; no worker calls it in these tests.
    settings.PROVIDER_BASE_URLS = {"sandbox": "https://sandbox.example"}
    return key_store


def _create_run(world, key=KEY):
    return world.api(Role.DEVELOPER).post(
        reverse("api:run-list"),
        {"workflow": str(world.workflow().pk), "provider_keys": {"sandbox": key}},
        "application/json",
    )


def _block(world, role=Role.ADMIN, **body):
    url = URL + "from-key/" if "key" in body else URL
    return world.api(role).post(url, {"provider": "sandbox", **body}, "application/json")


def _v2(world, key=KEY):
    return key_fingerprints(tenant=world.tenant, provider="sandbox", key=key)[0]


def _tokens(key_store):
    return list(key_store.scan_iter(match="swrly:byok:*"))


def _database_text():
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            rows.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(rows)


def test_a_run_presenting_a_blocked_fingerprint_is_refused_before_deposit(acme, deposit_ok):
    # given the customer blocked the key by the fingerprint they computed
    print_ = _v2(acme)
    created = _block(acme, fingerprint=print_.value, reason="leaked in a public repo")
    assert created.status_code == 201, created.content
    assert created.json()["cancelled_runs"] == 0

    # when a run presents the key
    response = _create_run(acme)

    # then it is refused in the API's error shape, nothing is deposited, and it is audited
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "key_blocked"
    assert "sandbox key is blocked" in error["message"]
    assert KEY not in response.content.decode()
    assert not Run.objects.filter(tenant=acme.tenant).exists()
    assert _tokens(deposit_ok) == []
    refused = AuditEvent.objects.get(tenant=acme.tenant, action="key.blocked")
    blocked = BlockedKey.objects.get(tenant=acme.tenant)
    assert refused.target == f"blocked_key:{blocked.pk}"
    assert refused.metadata == {
        "provider": "sandbox",
        "fingerprint": print_.value,
        "workflow": str(acme.workflow().pk),
    }
    added = AuditEvent.objects.get(tenant=acme.tenant, action="blocked_key.added")
    assert added.metadata["given"] == "fingerprint"
    assert added.metadata["reason"] == "leaked in a public repo"
    # another key still runs
    assert _create_run(acme, OTHER).status_code == 202


def test_a_legacy_fingerprint_blocks_the_key_too(acme, deposit_ok):
    legacy = legacy_fingerprint(provider="sandbox", key=KEY).value
    assert _block(acme, fingerprint=legacy).status_code == 201
    assert _create_run(acme).json()["error"]["code"] == "key_blocked"


def test_a_pasted_key_is_fingerprinted_at_once_and_never_kept(acme, deposit_ok, caplog):
    canary = "sk-ant-api03-canary" + secrets.token_urlsafe(40).replace("-", "x")
    acme.api(Role.OWNER).post(
        reverse("api:workflow-list"),
        {
            "name": "claude",
            "steps": [{"name": "a", "provider": "sandbox", "model": "m", "prompt": "hi"}],
        },
        "application/json",
    )
    with caplog.at_level(logging.DEBUG):
        created = _block(acme, role=Role.OWNER, key=canary, reason="pasted")
        refused = _create_run(acme, canary)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["fingerprint"] == _v2(acme, canary).value
    assert body["hint"] == _v2(acme, canary).hint
    assert "key" not in body
    assert refused.json()["error"]["code"] == "key_blocked"
    assert canary not in created.content.decode() + refused.content.decode()
    assert canary not in _database_text()
    assert canary not in caplog.text
    assert AuditEvent.objects.get(action="blocked_key.added").metadata["given"] == "key"


def test_blocking_cancels_queued_runs_holding_the_key_and_discards_their_tokens(
    acme, globex, deposit_ok
):
    # given two queued runs with the key, one with another key, and one in another tenant
    holding = [_create_run(acme).json()["id"] for _ in range(2)]
    other = _create_run(acme, OTHER).json()["id"]
    foreign = _create_run(globex).json()["id"]
    assert len(_tokens(deposit_ok)) == 4

    # when the admin blocks the key by pasting it
    created = _block(acme, key=KEY)

    # then the runs holding it are cancelled, their tokens gone, each step audited
    assert created.json()["cancelled_runs"] == 2
    for run_id in holding:
        run = Run.objects.get(pk=run_id)
        assert run.status == RunStatus.CANCELLED
        cancelled = AuditEvent.objects.get(target=f"run:{run_id}", action="run.cancelled")
        assert cancelled.metadata == {"while": "queued", "reason": "key_blocked"}
        discarded = AuditEvent.objects.get(target=f"run:{run_id}", action="key.discarded")
        assert discarded.metadata["token_found"] is True
        assert discarded.metadata["reason"] == "key_blocked"
    assert Run.objects.get(pk=other).status == RunStatus.QUEUED
    assert Run.objects.get(pk=foreign).status == RunStatus.QUEUED
    remaining = {name.decode() for name in _tokens(deposit_ok)}
    assert len(remaining) == 2
    assert any(other in name for name in remaining)
    assert any(foreign in name for name in remaining)


def test_a_key_blocked_while_the_run_is_created_is_caught_under_the_chain_lock(
    acme, deposit_ok, monkeypatch
):
    # The first check runs before the entry exists (it commits a moment later); the second,
    # under the audit-chain lock, sees it: the run is rolled back and its token discarded.
    from runs import services

    assert _block(acme, fingerprint=_v2(acme).value).status_code == 201
    real = services.blocked_key_for
    calls = []

    def first_check_misses(**kwargs):
        calls.append(kwargs)
        return None if len(calls) == 1 else real(**kwargs)

    monkeypatch.setattr(services, "blocked_key_for", first_check_misses)
    response = _create_run(acme)
    assert len(calls) == 2
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "key_blocked"
    assert not Run.objects.filter(tenant=acme.tenant).exists()
    assert _tokens(deposit_ok) == []
    assert AuditEvent.objects.filter(tenant=acme.tenant, action="key.blocked").count() == 1
    assert not AuditEvent.objects.filter(tenant=acme.tenant, action="run.created").exists()


def test_block_requests_are_checked(acme):
    fingerprint = "v2:" + "a" * 64
    assert _block(acme, fingerprint=fingerprint).status_code == 201
    again = _block(acme, fingerprint=fingerprint.upper().replace("V2:", "v2:"))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_blocked"
    both = _block(acme, fingerprint="v2:" + "b" * 64, key=KEY)
    assert both.json()["error"]["fields"] == {"fingerprint": ["unknown field"]}
    neither = _block(acme)
    assert neither.json()["error"]["fields"].keys() == {"fingerprint"}
    longer = _block(acme, fingerprint="v2:" + "b" * 65)
    assert longer.json()["error"]["fields"].keys() == {"fingerprint"}
    not_hex = _block(acme, fingerprint="v2:" + "g" * 64)
    assert not_hex.json()["error"]["fields"].keys() == {"fingerprint"}
    short = _block(acme, fingerprint="v2:abcd")
    assert short.json()["error"]["fields"].keys() == {"fingerprint"}
    unknown = acme.api(Role.ADMIN).post(
        URL, {"provider": "nope", "fingerprint": fingerprint}, "application/json"
    )
    assert unknown.status_code == 400
    assert BlockedKey.objects.filter(tenant=acme.tenant).count() == 1


def test_unblocking_lets_the_key_run_again(acme, deposit_ok):
    blocked_id = _block(acme, key=KEY).json()["id"]
    listed = acme.api(Role.DEVELOPER).get(URL).json()
    assert [row["id"] for row in listed] == [blocked_id]
    deleted = acme.api(Role.OWNER).delete(f"{URL}{blocked_id}/")
    assert deleted.status_code == 204
    assert AuditEvent.objects.get(action="blocked_key.removed").target == (
        f"blocked_key:{blocked_id}"
    )
    assert _create_run(acme).status_code == 202


# --- The key-history page -------------------------------------------------------------------

PAGE = "/t/acme/keys/"


def test_the_page_shows_the_salt_to_owners_admins_auditors_and_the_form_to_managers(acme):
    from swrly.custody.services import fingerprint_salt

    salt = fingerprint_salt(tenant=acme.tenant).hex()
    seen = {}
    for role in Role:
        html = acme.client(role).get(PAGE).content.decode()
        seen[role] = (salt in html, 'action="/t/acme/keys/blocked/add/"' in html)
    assert seen == {
        Role.OWNER: (True, True),
        Role.ADMIN: (True, True),
        Role.DEVELOPER: (False, False),
        Role.AUDITOR: (True, False),
    }


def test_the_page_blocks_a_pasted_key_and_unblocks_it(acme, deposit_ok):
    client = acme.client(Role.ADMIN)
    response = client.post(
        "/t/acme/keys/blocked/add/", {"provider": "sandbox", "key": KEY, "reason": "phished"}
    )
    assert response.status_code == 302
    blocked = BlockedKey.objects.get(tenant=acme.tenant)
    assert blocked.fingerprint == _v2(acme).value
    assert blocked.created_by.startswith("user:")
    html = client.get(PAGE).content.decode()
    assert f'data-blocked-key-id="{blocked.pk}"' in html
    assert "phished" in html
    assert KEY not in html
    assert KEY not in _database_text()
    assert _create_run(acme).json()["error"]["code"] == "key_blocked"

    # a bad request shows the form again, never with the key in it
    again = client.post("/t/acme/keys/blocked/add/", {"provider": "sandbox", "key": KEY})
    assert again.status_code == 400
    assert "already blocked" in again.content.decode()
    assert KEY not in again.content.decode()

    removed = client.post(f"/t/acme/keys/blocked/{blocked.pk}/remove/")
    assert removed.status_code == 302
    assert not BlockedKey.objects.exists()


def test_developers_and_auditors_cannot_block_or_unblock_on_the_page(acme):
    blocked = BlockedKey.objects.create(
        tenant=acme.tenant, provider="sandbox", fingerprint="v2:" + "a" * 64, created_by="t"
    )
    for role in (Role.DEVELOPER, Role.AUDITOR):
        client = acme.client(role)
        add = client.post(
            "/t/acme/keys/blocked/add/", {"provider": "sandbox", "fingerprint": "v2:" + "b" * 64}
        )
        remove = client.post(f"/t/acme/keys/blocked/{blocked.pk}/remove/")
        assert (add.status_code, remove.status_code) == (403, 403)
    assert list(BlockedKey.objects.values_list("pk", flat=True)) == [blocked.pk]
