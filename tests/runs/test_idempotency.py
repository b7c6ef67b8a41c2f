"""POST /api/v1/runs/ with an Idempotency-Key: a retry returns the first run, deposits nothing."""

import threading

import pytest
from django.db import connection

from runs.models import Run
from swrly.audit.models import AuditEvent
from swrly.keys.store import KEY_PATTERN
from tenants.models import Role

STEPS = [{"name": "one", "provider": "sandbox", "model": "m", "prompt": "{{ input.q }}"}]
KEYS = {"sandbox": "sk-sandbox-idempotent-0001"}


def _post(world, workflow_id, key, run_input=None, keys=KEYS):
    return world.api(Role.DEVELOPER).post(
        "/api/v1/runs/",
        {"workflow": workflow_id, "input": run_input or {"q": "hi"}, "provider_keys": keys},
        "application/json",
        headers={"Idempotency-Key": key},
    )


@pytest.fixture
def workflow(acme, provider_server):
    response = acme.api(Role.DEVELOPER).post(
        "/api/v1/workflows/", {"name": "w", "steps": STEPS}, "application/json"
    )
    return response.json()["id"]


def test_a_retry_returns_the_first_run_and_deposits_nothing_again(acme, workflow, key_store):
    first = _post(acme, workflow, "retry-1")
    token_before = key_store.get(next(key_store.scan_iter(match=KEY_PATTERN)))
    second = _post(acme, workflow, "retry-1")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second["Idempotent-Replayed"] == "true"
    assert Run.objects.count() == 1
    assert AuditEvent.objects.filter(action="key.deposited").count() == 1
    (name,) = list(key_store.scan_iter(match=KEY_PATTERN))
    assert key_store.get(name) == token_before  # the token was not re-deposited


def test_the_same_key_for_a_different_request_is_a_conflict(acme, workflow, key_store):
    _post(acme, workflow, "k")
    response = _post(acme, workflow, "k", run_input={"q": "something else"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    other_key = _post(acme, workflow, "k", keys={"sandbox": "sk-sandbox-another-key-02"})
    assert other_key.status_code == 409
    assert Run.objects.count() == 1


def test_keys_are_per_tenant(acme, globex, workflow, key_store):
    _post(acme, workflow, "shared-name")
    other = (
        globex.api(Role.DEVELOPER)
        .post("/api/v1/workflows/", {"name": "w", "steps": STEPS}, "application/json")
        .json()["id"]
    )
    assert _post(globex, other, "shared-name").status_code == 202
    assert Run.objects.count() == 2


@pytest.mark.parametrize("bad", ["", "x" * 256, "has space", "tab\tkey"])
def test_a_malformed_key_is_refused(acme, workflow, key_store, bad):
    response = _post(acme, workflow, bad)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert not Run.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_make_one_run(acme, workflow, key_store):
    results, barrier = [], threading.Barrier(4)

    def send():
        barrier.wait()
        try:
            results.append(_post(acme, workflow, "racing"))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [202] * 4
    assert len({r.json()["id"] for r in results}) == 1
    assert Run.objects.count() == 1
    assert len(list(key_store.scan_iter(match=KEY_PATTERN))) == 1


def test_losing_the_race_for_a_key_answers_the_winners_run(acme, workflow, key_store, monkeypatch):
    from runs import services

    first = _post(acme, workflow, "raced")
    lookups = []
    looked_up = services.run_for_idempotency_key

    def not_yet_committed(**kwargs):  # the winner commits after the loser's look-up
        lookups.append(kwargs["key"])
        return None if len(lookups) == 1 else looked_up(**kwargs)

    monkeypatch.setattr(services, "run_for_idempotency_key", not_yet_committed)
    second = _post(acme, workflow, "raced")
    assert second.status_code == 202
    assert second["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert lookups == ["raced", "raced"]
    assert Run.objects.count() == 1
    assert len(list(key_store.scan_iter(match=KEY_PATTERN))) == 1


def test_another_integrity_error_is_not_taken_for_the_race(acme, workflow, key_store, monkeypatch):
    from django.db import IntegrityError

    from runs import services

    def broken(**kwargs):
        raise IntegrityError("some other constraint")

    monkeypatch.setattr(services, "provider_key_seen", broken)
    with pytest.raises(IntegrityError, match="some other constraint"):
        _post(acme, workflow, "not-a-race")
    assert not Run.objects.exists()
    assert not list(key_store.scan_iter(match=KEY_PATTERN))
