"""Rotation history: encryption-key rotations and the tenant's provider keys by fingerprint."""

import re
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from swrly.custody.models import KeyRotation, ProviderKey
from tenants.models import Role
from tests.pages.conftest import KEY_A, KEY_B, T0, key_print, make_rotation, make_run

URL = "/t/acme/keys/"


def _page(world, role=Role.AUDITOR) -> str:
    response = world.client(role).get(URL)
    assert response.status_code == 200
    return response.content.decode()


def _table(html: str, table_id: str) -> str:
    return re.search(rf'<table id="{table_id}"[^>]*>(.*?)</table>', html, re.S).group(1)


def test_rotations_show_every_rotation_with_this_tenants_rewrapped_count(acme, globex):
    mine = make_rotation(acme, at=T0, rewrapped=7)
    untouched = make_rotation(acme, at=T0 + timedelta(days=1), rewrapped=None)
    theirs = make_rotation(globex, at=T0 + timedelta(days=2), rewrapped=11)
    rotations = _table(_page(acme), "rotations")
    rows = re.findall(r'<tr data-rotation-id="([0-9a-f-]+)"[^>]*>(.*?)</tr>', rotations, re.S)
    assert [row_id for row_id, _ in rows] == [str(theirs.pk), str(untouched.pk), str(mine.pk)]
    counts = [re.findall(r'<td class="num">(\d+)</td>', body)[-1] for _, body in rows]
    assert counts == ["0", "0", "7"]  # never another tenant's count
    assert "0a1b2c3d" in rotations
    assert "9f8e7d6c" in rotations
    assert "system:rotate-keys" in rotations
    assert "Succeeded" in rotations
    assert ">40<" not in rotations  # the platform-wide count is not shown to a tenant


def test_provider_keys_show_which_key_replaced_which_and_when_the_old_one_stopped(acme):
    make_run(acme, at=T0, key=KEY_A)
    make_run(acme, at=T0 + timedelta(days=1), key=KEY_A)
    make_run(acme, at=T0 + timedelta(days=5), key=KEY_B)
    make_run(acme, at=T0 + timedelta(days=6), key=KEY_B)
    make_run(acme, at=T0 + timedelta(days=7), key=KEY_B)
    keys = _table(_page(acme), "provider-keys")
    old, new = key_print(KEY_A), key_print(KEY_B)
    rows = re.findall(
        r'<tr data-provider="anthropic" data-fingerprint="(\w+)">(.*?)</tr>', keys, re.S
    )
    assert [fp for fp, _ in rows] == [old.value, new.value]
    old_row, new_row = rows[0][1], rows[1][1]
    assert old.hint in old_row
    assert f'title="{old.value}">{old.value[:12]}…' in old_row  # shortened, full on hover
    assert 'datetime="2025-03-03T09:00:00Z"' in old_row  # first seen
    assert 'datetime="2025-03-04T09:00:00Z"' in old_row  # last seen
    assert re.findall(r'class="num">(?:<a [^>]+>)?(\d+)', old_row) == ["2", "2"]  # uses, runs
    assert new.hint in old_row  # replaced by
    assert "not used since" in old_row
    assert re.findall(r'class="num">(?:<a [^>]+>)?(\d+)', new_row) == ["3", "3"]
    assert "current key" in new_row


def test_a_key_used_after_its_replacement_appeared_is_flagged(acme):
    make_run(acme, at=T0, key=KEY_A)
    make_run(acme, at=T0 + timedelta(days=1), key=KEY_B)
    make_run(acme, at=T0 + timedelta(days=2), key=KEY_A)
    assert "Still used after its replacement appeared" in _page(acme)


def test_the_runs_count_counts_runs_not_other_tenants_or_providers(acme, globex):
    make_run(acme, key=KEY_A)
    make_run(acme, key=KEY_A, provider="openai")
    make_run(globex, key=KEY_A)
    keys = _table(_page(acme), "provider-keys")
    for provider in ("anthropic", "openai"):
        row = re.search(rf'<tr data-provider="{provider}"[^>]*>(.*?)</tr>', keys, re.S).group(1)
        assert re.findall(r'class="num">(?:<a [^>]+>)?(\d+)', row) == ["1", "1"]


def test_empty_states_say_what_to_do_next(acme):
    html = _page(acme)
    assert "No provider keys yet" in html
    assert "No encryption-key rotations yet" in html
    assert "rotate-keys" in html


def test_the_query_count_is_the_same_for_5_and_60_keys_and_rotations(acme):
    client = acme.client(Role.AUDITOR)
    make_run(acme)  # one key with a run, so the runs subquery has rows to count

    def count(total):
        existing = ProviderKey.objects.filter(tenant=acme.tenant).count()
        ProviderKey.objects.bulk_create(
            ProviderKey(
                tenant=acme.tenant,
                provider="openai" if i % 2 else "anthropic",
                fingerprint=f"{i:064x}",
                hint=f"sk-…{i:04d}",
                first_seen_at=T0 + timedelta(hours=i),
                last_seen_at=T0 + timedelta(hours=i + 1),
                use_count=1,
            )
            for i in range(existing, total)
        )
        for i in range(KeyRotation.objects.count(), total):
            make_rotation(acme, at=T0 + timedelta(hours=i), rewrapped=i if i % 2 else None)
        client.get(URL)
        with CaptureQueriesContext(connection) as queries:
            html = client.get(URL).content.decode()
        assert html.count("<tr data-provider=") == total
        assert html.count("<tr data-rotation-id=") == total
        return len(queries)

    few, many = count(5), count(60)
    assert few == many, f"{few} queries for 5 keys, {many} for 60"


def test_the_page_is_linked_from_the_nav_for_every_role(acme):
    for role in Role:
        html = acme.client(role).get(reverse("runs:dashboard", args=["acme"])).content.decode()
        assert 'href="/t/acme/keys/"' in html


def test_encryption_key_usage_shows_each_keys_share_of_the_budget_not_the_count(
    acme, key_store, settings
):
    from swrly.custody.models import EncryptionKeyUsage
    from swrly.keys.keyring import get_keyring

    current = get_keyring().current.key_id_hex
    EncryptionKeyUsage.objects.create(
        key_id="00aa11bb22cc33dd", sealed=2**32, first_recorded_at=T0, last_recorded_at=T0
    )
    EncryptionKeyUsage.objects.create(
        key_id=current, sealed=3 * 2**28 + 12345, first_recorded_at=T0, last_recorded_at=T0
    )
    usage = _table(_page(acme), "key-usage")
    rows = re.findall(
        r'<tr data-key-id="(\w+)" data-role="(\w+)" data-state="(\w+)">(.*?)</tr>', usage, re.S
    )
    assert [row[:3] for row in rows] == [
        (current, "current", "ok"),
        ("00aa11bb22cc33dd", "retired", "exhausted"),
    ]
    assert "18.75%" in rows[0][3]
    assert "100.00%" in rows[1][3]
    assert "past the bound" in rows[1][3]
    assert str(3 * 2**28 + 12345) not in usage  # the platform's count is not a tenant's to see
