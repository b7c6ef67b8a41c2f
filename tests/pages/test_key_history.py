"""Rotation history: encryption-key rotations and the tenant's provider keys by fingerprint."""

import re
from datetime import timedelta

import time_machine
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


def _rows(html: str, provider: str = "anthropic") -> list[tuple[str, str]]:
    keys = _table(html, "provider-keys")
    return re.findall(
        rf'<tr data-provider="{provider}" data-fingerprint="([\w:]+)"[^>]*>(.*?)</tr>', keys, re.S
    )


def _bar(row: str) -> tuple[int, int]:
    bar = re.search(r'class="period-bar[^"]*" x="(\d+)" y="1" width="(\d+)"', row)
    return int(bar[1]), int(bar[2])


def test_each_keys_period_of_use_is_a_bar_on_its_providers_shared_axis(acme):
    make_run(acme, at=T0, key=KEY_A)
    make_run(acme, at=T0 + timedelta(days=1), key=KEY_A)
    make_run(acme, at=T0 + timedelta(days=5), key=KEY_B)
    make_run(acme, at=T0 + timedelta(days=6), key=KEY_B)
    make_run(acme, at=T0 + timedelta(days=7), key=KEY_B)
    html = _page(acme)
    old, new = key_print(KEY_A), key_print(KEY_B)
    rows = _rows(html)
    assert [fp for fp, _ in rows] == [old.value, new.value]
    old_row, new_row = rows[0][1], rows[1][1]
    assert old.hint in old_row
    assert f">{old.value[:8]}</code>" in old_row  # the fingerprint's prefix beside the hint
    assert 'datetime="2025-03-03T09:00:00Z"' in old_row  # first used
    assert 'datetime="2025-03-04T09:00:00Z"' in old_row  # last used
    assert re.findall(r'class="num"[^>]*>(?:<a [^>]+>)?(\d+)', old_row) == ["2", "2"]  # uses, runs
    assert re.findall(r'class="num"[^>]*>(?:<a [^>]+>)?(\d+)', new_row) == ["3", "3"]
    # one axis for the provider, from the first first use (T0) to the last last use (T0 + 7 d)
    axis = re.search(r'<tbody data-provider-axis="anthropic">(.*?)</tbody>', html, re.S).group(1)
    assert 'datetime="2025-03-03T09:00:00Z"' in axis.split("</tr>")[0]
    assert 'datetime="2025-03-10T09:00:00Z"' in axis.split("</tr>")[0]
    assert _bar(old_row) == (0, 143)  # days 0 to 1 of 7
    assert _bar(new_row) == (714, 286)  # days 5 to 7 of 7
    assert "Replaced" not in html
    assert "replacement" not in html


def test_keys_used_side_by_side_raise_no_alarm(acme):
    make_run(acme, at=T0, key=KEY_A)
    make_run(acme, at=T0 + timedelta(days=1), key=KEY_B)
    make_run(acme, at=T0 + timedelta(days=2), key=KEY_A)
    make_run(acme, at=T0 + timedelta(days=3), key=KEY_B)
    html = _page(acme)
    assert "data-alarm" not in html
    assert 'class="warning"' not in _table(html, "provider-keys")
    (_, a), (_, b) = _rows(html)
    (a_start, a_width), (b_start, _) = _bar(a), _bar(b)
    assert a_start < b_start < a_start + a_width  # the periods overlap, drawn as such


def test_two_keys_with_the_same_hint_are_told_apart(acme):
    twin = KEY_A[:-5] + "zQa1x"  # another key, the same prefix and last four characters
    make_run(acme, at=T0, key=KEY_A)
    make_run(acme, at=T0 + timedelta(hours=1), key=twin)
    rows = _rows(_page(acme))
    one, other = key_print(KEY_A), key_print(twin)
    assert one.hint == other.hint
    assert [fp for fp, _ in rows] == [one.value, other.value]
    assert f">{one.value[:8]}</code>" in rows[0][1]
    assert f">{other.value[:8]}</code>" in rows[1][1]
    assert one.value[:8] != other.value[:8]


def test_a_key_presented_or_used_after_it_was_blocked_is_an_alarm(acme):
    from swrly.audit.writer import Actor, audit_record
    from swrly.custody.services import blocked_key_add

    make_run(acme, at=T0, key=KEY_A)
    make_run(acme, at=T0, key=KEY_B)
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        blocked = blocked_key_add(
            tenant=acme.tenant,
            provider="anthropic",
            fingerprint=key_print(KEY_A).value,
            actor=Actor(label="user:owner@acme.example"),
            reason="leaked",
        ).blocked_key
        blocked_b = blocked_key_add(
            tenant=acme.tenant,
            provider="anthropic",
            fingerprint=key_print(KEY_B).value,
            actor=Actor(label="user:owner@acme.example"),
        ).blocked_key
    quiet = {fp: row for fp, row in _rows(_page(acme))}
    assert "data-alarm" not in _table(_page(acme), "provider-keys")  # blocked, nothing since
    assert "Blocked <time" in quiet[key_print(KEY_A).value]
    # someone presents the blocked key again (refused, key.blocked), and another key was given
    # to a run after its block (what the blocklist should make impossible)
    for _ in range(2):
        audit_record(
            tenant=acme.tenant,
            action="key.blocked",
            actor=Actor(label="token:ci (swr_abc…)"),
            target=f"blocked_key:{blocked.pk}",
            metadata={"provider": "anthropic", "fingerprint": blocked.fingerprint},
        )
    make_run(acme, at=T0 + timedelta(days=2), key=KEY_B)
    html = _page(acme)
    rows = {fp: row for fp, row in _rows(html)}
    assert "Presented 2 times since it was blocked (refused)." in rows[key_print(KEY_A).value]
    assert "Used after it was blocked." in rows[key_print(KEY_B).value]
    assert html.count('data-alarm="true"') == 2
    assert blocked_b.pk
    assert 'class="period-block-mark"' in rows[key_print(KEY_A).value]


def test_the_page_says_cross_tenant_use_cannot_be_seen(acme, globex):
    make_run(acme, key=KEY_A)
    make_run(globex, key=KEY_A)  # the same key in another tenant: no alarm, none possible
    html = _page(acme)
    assert "data-alarm" not in html
    assert "cannot tell whether one of your keys was also used in another tenant" in html


def test_the_runs_count_counts_runs_not_other_tenants_or_providers(acme, globex):
    make_run(acme, key=KEY_A)
    make_run(acme, key=KEY_A, provider="openai")
    make_run(globex, key=KEY_A)
    keys = _table(_page(acme), "provider-keys")
    for provider in ("anthropic", "openai"):
        row = re.search(rf'<tr data-provider="{provider}"[^>]*>(.*?)</tr>', keys, re.S).group(1)
        assert re.findall(r'class="num"[^>]*>(?:<a [^>]+>)?(\d+)', row) == ["1", "1"]


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
