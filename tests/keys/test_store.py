"""The Redis token store, against the real Valkey/Redis server of the test session."""

import logging
import multiprocessing
import secrets
import socket
import threading
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

import swrly.keys
from swrly.keys.errors import (
    InvalidKey,
    InvalidProvider,
    KeyStoreUnavailable,
    TokenAuthenticationFailed,
    TokenExists,
    TokenMissing,
    UnknownKeyId,
)
from swrly.keys.keyring import generate_key, get_keyring
from swrly.keys.secret import live_secrets
from swrly.keys.store import (
    KEY_PATTERN,
    consume,
    deposit,
    discard,
    get_client,
    parse_redis_key,
    redis_key,
    shard,
)
from swrly.providers import PROVIDER_NAMES
from swrly.redis_urls import primaries, redis_client
from tests.forking import true_in_forked_child

KEY = "sk-ant-api03-" + "s" * 40 + "St0r"
ROUNDS = 50
THREADS = 16
PROCESSES = 4


@pytest.fixture
def raw():
    """A plain redis-py client on the key-store server, to look at what the store wrote."""
    client = redis_client(django_settings.BYOK_REDIS_URL, socket_timeout=2)
    yield client
    client.close()


@pytest.fixture
def new_run(raw):
    """Fresh tenant and run ids; every token stored under them is deleted at teardown.

    Other suites scan all live tokens (rotate-keys): nothing of these tests may stay behind.
    """
    made = []

    def make():
        ids = {"tenant_id": str(uuid.uuid4()), "run_id": str(uuid.uuid4())}
        made.append(ids)
        return ids

    yield make
    names = [redis_key(**ids, provider=provider) for ids in made for provider in PROVIDER_NAMES]
    if names:
        raw.delete(*names)


def _canary():
    return "sk-ant-canary-" + secrets.token_hex(16)


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(vars(exc))


def _closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_deposit_and_consume_round_trip(new_run, raw):
    ids = new_run()
    before = datetime.now(UTC)
    receipt = deposit(**ids, provider="anthropic", key=KEY)
    assert receipt.redis_key == redis_key(**ids, provider="anthropic")
    tag = shard(ids["tenant_id"], ids["run_id"])
    assert (
        receipt.redis_key == f"swrly:byok:v1:{{{tag}}}:{ids['tenant_id']}:{ids['run_id']}:anthropic"
    )
    assert receipt.key_id_hex == get_keyring().current.key_id_hex
    assert receipt.ttl == django_settings.BYOK_TOKEN_TTL == 900
    assert before + timedelta(seconds=900) <= receipt.expires_at
    assert receipt.expires_at <= datetime.now(UTC) + timedelta(seconds=900)
    with consume(**ids, provider="anthropic") as secret:
        assert secret.reveal() == KEY
        assert secret.key_id_hex == receipt.key_id_hex
    assert raw.exists(receipt.redis_key) == 0
    with pytest.raises(TokenMissing):
        consume(**ids, provider="anthropic")


def test_the_package_exposes_the_service():
    assert swrly.keys.deposit is deposit
    assert swrly.keys.consume is consume
    assert swrly.keys.discard is discard
    assert issubclass(swrly.keys.TokenMissing, swrly.keys.KeyServiceError)


def test_uuid_ids_are_accepted(new_run):
    ids = new_run()
    deposit(**ids, provider="openai", key=KEY)
    as_uuids = {name: uuid.UUID(value) for name, value in ids.items()}
    with consume(**as_uuids, provider="openai") as secret:
        assert secret.reveal() == KEY


def test_providers_are_independent(new_run):
    ids = new_run()
    for provider in PROVIDER_NAMES:
        deposit(**ids, provider=provider, key=f"{KEY}-{provider}")
    for provider in reversed(PROVIDER_NAMES):
        with consume(**ids, provider=provider) as secret:
            assert secret.reveal() == f"{KEY}-{provider}"


def test_ttl_comes_from_the_setting_or_the_argument(new_run, raw, settings):
    ids = new_run()
    deposit(**ids, provider="anthropic", key=KEY)
    assert 895 <= raw.ttl(redis_key(**ids, provider="anthropic")) <= 900
    settings.BYOK_TOKEN_TTL = 60
    receipt = deposit(**ids, provider="openai", key=KEY)
    assert receipt.ttl == 60
    assert 55 <= raw.ttl(receipt.redis_key) <= 60
    receipt = deposit(**ids, provider="sandbox", key=KEY, ttl=86400)
    assert 86395 <= raw.ttl(receipt.redis_key) <= 86400


@pytest.mark.parametrize("ttl", [0, -1, 86401, True, 1.5, "60"])
def test_ttl_out_of_bounds_is_refused_and_nothing_stored(new_run, raw, ttl):
    ids = new_run()
    with pytest.raises(ValueError, match="TTL"):
        deposit(**ids, provider="anthropic", key=KEY, ttl=ttl)
    assert raw.exists(redis_key(**ids, provider="anthropic")) == 0


def test_ttl_setting_out_of_bounds_is_refused(new_run, settings):
    settings.BYOK_TOKEN_TTL = 0
    with pytest.raises(ValueError, match="between 1 and 86400"):
        deposit(**new_run(), provider="anthropic", key=KEY)


def test_a_token_expires_with_its_ttl(new_run, raw):
    ids = new_run()
    receipt = deposit(**ids, provider="anthropic", key=KEY, ttl=1)
    deadline = time.monotonic() + 3
    while raw.exists(receipt.redis_key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert raw.exists(receipt.redis_key) == 0
    with pytest.raises(TokenMissing):
        consume(**ids, provider="anthropic")


def test_a_deposit_never_overwrites(new_run, raw):
    ids = new_run()
    first = deposit(**ids, provider="anthropic", key=KEY, ttl=600)
    with pytest.raises(TokenExists) as caught:
        deposit(**ids, provider="anthropic", key=KEY + "-second", ttl=900)
    assert caught.value.run_id == ids["run_id"]
    assert caught.value.provider == "anthropic"
    assert raw.ttl(first.redis_key) <= 600  # the first TTL was not reset either
    with consume(**ids, provider="anthropic") as secret:
        assert secret.reveal() == KEY


def test_discard_deletes_the_token(new_run):
    ids = new_run()
    deposit(**ids, provider="openai", key=KEY)
    assert discard(**ids, provider="openai") is True
    assert discard(**ids, provider="openai") is False
    with pytest.raises(TokenMissing):
        consume(**ids, provider="openai")


@pytest.mark.parametrize("provider", ["gemini", "Anthropic", "", None, "sk-ant-api03-xyzxyzxyz"])
def test_unknown_providers_are_refused(new_run, raw, provider):
    ids = new_run()
    with pytest.raises(InvalidProvider) as caught:
        deposit(**ids, provider=provider, key=KEY)
    assert "anthropic, openai, sandbox" in str(caught.value)
    if provider:
        assert provider not in str(caught.value)
    with pytest.raises(InvalidProvider):
        consume(**ids, provider=provider)
    with pytest.raises(InvalidProvider):
        discard(**ids, provider=provider)
    assert raw.keys(f"swrly:byok:v1:{ids['tenant_id']}:*") == []


OUTSIDE_ALPHABET = "contains characters other than letters, digits, '-' and '_'"


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "is empty"),
        ("sk-ant-with space-0123456789", "contains whitespace or control characters"),
        ("sk-ant-newline-0123456789\n", "contains whitespace or control characters"),
        ("sk-ant-header\r\nX-Evil: 1", "contains whitespace or control characters"),
        ("sk-ant-nul\x00-0123456789", "contains whitespace or control characters"),
        ("sk-ant-tab\t0123456789", "contains whitespace or control characters"),
        ("sk-ant-del\x7f0123456789", "contains whitespace or control characters"),
        ("sk-ant-ünïcode-0123456789", "contains characters outside printable ASCII"),
        ("sk-ant-nbsp\u00a00123456789", "contains characters outside printable ASCII"),
        *(
            (f"sk-ant-api03-{char}-0123456789", OUTSIDE_ALPHABET)
            # Every character an escaping (JSON, HTML, URL, base64's own alphabet) could change.
            for char in ('"', "\\", "<", ">", "&", "'", "%", "+", "/", "=", ".", ":", "~", "!")
        ),
        ("sk-" + "x" * 510, "is longer than 512 characters"),
        ("sk-1234", "is shorter than 8 characters"),
        (12345678, "is not a string"),
        (None, "is not a string"),
    ],
)
def test_invalid_keys_are_refused_without_echoing_them(new_run, raw, key, rule):
    ids = new_run()
    with pytest.raises(InvalidKey) as caught:
        deposit(**ids, provider="anthropic", key=key)
    assert caught.value.rule == rule
    assert str(caught.value) == f"the anthropic key {rule}"
    if isinstance(key, str) and key:
        text = _exception_text(caught.value)
        assert key not in text
        assert key.strip()[:12] not in text.replace("sk-ant-", "")
    assert raw.exists(redis_key(**ids, provider="anthropic")) == 0


def test_the_longest_and_shortest_keys_are_accepted(new_run):
    ids = new_run()
    longest, shortest = "k" * 512, "_" + "-" * 7
    deposit(**ids, provider="anthropic", key=longest)
    deposit(**ids, provider="openai", key=shortest)
    with consume(**ids, provider="anthropic") as a, consume(**ids, provider="openai") as b:
        assert (a.reveal(), b.reveal()) == (longest, shortest)


@pytest.mark.parametrize("moved", ["run", "tenant", "provider"])
def test_a_token_copied_under_another_runs_or_tenants_key_fails(new_run, raw, moved):
    ids = new_run()
    receipt = deposit(**ids, provider="anthropic", key=KEY)
    token = raw.get(receipt.redis_key)
    other = new_run()
    target = {
        "run": {**ids, "run_id": other["run_id"], "provider": "anthropic"},
        "tenant": {**ids, "tenant_id": other["tenant_id"], "provider": "anthropic"},
        "provider": {**ids, "provider": "openai"},
    }[moved]
    raw.set(redis_key(**target), token, ex=60)
    with pytest.raises(TokenAuthenticationFailed) as caught:
        consume(**target)
    assert KEY not in _exception_text(caught.value)
    assert raw.exists(redis_key(**target)) == 0  # taken all the same: never retried
    with consume(**ids, provider="anthropic") as secret:  # the original is untouched
        assert secret.reveal() == KEY


def test_a_tampered_token_in_redis_fails(new_run, raw):
    ids = new_run()
    receipt = deposit(**ids, provider="anthropic", key=KEY)
    token = bytearray(raw.get(receipt.redis_key))
    token[30] ^= 0x01
    raw.set(receipt.redis_key, bytes(token), keepttl=True)
    with pytest.raises(TokenAuthenticationFailed, match="tag mismatch"):
        consume(**ids, provider="anthropic")
    assert raw.exists(receipt.redis_key) == 0


def test_a_fallback_key_opens_a_token_deposited_before_rotation(new_run, settings):
    old, new = generate_key(), generate_key()
    settings.BYOK_ENCRYPTION_KEY, settings.BYOK_ENCRYPTION_KEY_FALLBACKS = old, []
    ids = new_run()
    before = deposit(**ids, provider="anthropic", key=KEY)
    settings.BYOK_ENCRYPTION_KEY, settings.BYOK_ENCRYPTION_KEY_FALLBACKS = new, [old]
    after = deposit(**ids, provider="openai", key=KEY)
    assert after.key_id_hex == get_keyring().current.key_id_hex != before.key_id_hex
    with consume(**ids, provider="anthropic") as secret:
        assert secret.reveal() == KEY
        assert secret.key_id_hex == before.key_id_hex
    with consume(**ids, provider="openai") as secret:
        assert secret.key_id_hex == after.key_id_hex


def test_a_token_under_a_retired_key_is_unknown_key_id(new_run, raw, settings):
    old = generate_key()
    settings.BYOK_ENCRYPTION_KEY, settings.BYOK_ENCRYPTION_KEY_FALLBACKS = old, []
    ids = new_run()
    receipt = deposit(**ids, provider="anthropic", key=KEY)
    settings.BYOK_ENCRYPTION_KEY = generate_key()  # old retired, no fallback
    with pytest.raises(UnknownKeyId) as caught:
        consume(**ids, provider="anthropic")
    assert caught.value.key_id_hex == receipt.key_id_hex
    assert raw.exists(receipt.redis_key) == 0


def test_exactly_one_of_16_threads_wins_each_token(new_run):
    rounds = [new_run() for _ in range(ROUNDS)]
    for ids in rounds:
        deposit(**ids, provider="sandbox", key=KEY)
    barrier = threading.Barrier(THREADS)

    def worker() -> list[tuple[str, str]]:
        outcomes = []
        for ids in rounds:
            barrier.wait(timeout=10)
            try:
                with consume(**ids, provider="sandbox") as secret:
                    outcomes.append((ids["run_id"], "won" if secret.reveal() == KEY else "wrong"))
            except TokenMissing:
                outcomes.append((ids["run_id"], "missing"))
        return outcomes

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(worker) for _ in range(THREADS)]
        outcomes = [outcome for future in futures for outcome in future.result(timeout=60)]
    _assert_one_winner_per_round(rounds, outcomes, contenders=THREADS)


def _consume_in_a_process(barrier, rounds, results) -> None:
    for ids in rounds:
        barrier.wait(timeout=10)
        try:
            with consume(**ids, provider="sandbox") as secret:
                results.put((ids["run_id"], "won" if secret.reveal() == KEY else "wrong"))
        except TokenMissing:
            results.put((ids["run_id"], "missing"))
        except Exception as exc:
            results.put((ids["run_id"], f"error {type(exc).__name__}"))


def test_exactly_one_of_4_processes_wins_each_token(new_run):
    rounds = [new_run() for _ in range(ROUNDS)]
    for ids in rounds:
        deposit(**ids, provider="sandbox", key=KEY)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=_consume_in_a_process, args=(barrier, rounds, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=20) for _ in range(ROUNDS * PROCESSES)]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    _assert_one_winner_per_round(rounds, outcomes, contenders=PROCESSES)


def _assert_one_winner_per_round(rounds, outcomes, *, contenders):
    assert len(outcomes) == len(rounds) * contenders
    assert {outcome for _, outcome in outcomes} <= {"won", "missing"}
    winners = Counter(run_id for run_id, outcome in outcomes if outcome == "won")
    assert winners == Counter({ids["run_id"]: 1 for ids in rounds})


def test_redis_down_during_deposit_consume_and_discard(new_run, settings):
    ids = new_run()
    canary = _canary()
    settings.BYOK_REDIS_URL = _closed_port_url()
    for operation in (
        lambda: deposit(**ids, provider="anthropic", key=canary),
        lambda: consume(**ids, provider="anthropic"),
        lambda: discard(**ids, provider="anthropic"),
    ):
        started = time.monotonic()
        with pytest.raises(KeyStoreUnavailable, match="is unreachable") as caught:
            operation()
        assert time.monotonic() - started < 2.5
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
        assert canary not in _exception_text(caught.value)
        assert settings.BYOK_REDIS_URL not in str(caught.value)


def test_redis_down_between_deposit_and_consume(new_run, settings):
    ids = new_run()
    deposit(**ids, provider="anthropic", key=KEY)
    url = settings.BYOK_REDIS_URL
    settings.BYOK_REDIS_URL = _closed_port_url()
    with pytest.raises(KeyStoreUnavailable):
        consume(**ids, provider="anthropic")
    settings.BYOK_REDIS_URL = url  # back up: the token is still there, untouched
    with consume(**ids, provider="anthropic") as secret:
        assert secret.reveal() == KEY


def test_a_server_that_never_answers_times_out(new_run, settings):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections in the kernel, never answers
        settings.BYOK_REDIS_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        started = time.monotonic()
        with pytest.raises(KeyStoreUnavailable, match="did not answer") as caught:
            deposit(**new_run(), provider="anthropic", key=KEY)
        assert time.monotonic() - started < 4
    assert isinstance(caught.value.__cause__, redis.TimeoutError)


def test_get_client_uses_the_key_store_url_with_short_timeouts(settings):
    client = get_client()
    assert get_client() is client
    for node in primaries(client):  # the one server, the Sentinel primary or each cluster node
        kwargs = node.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 2
        assert kwargs["socket_connect_timeout"] == 2
        assert kwargs["retry"].get_retries() == 0
    assert client.ping()
    key_store_url = settings.BYOK_REDIS_URL
    settings.BYOK_REDIS_URL = ""
    settings.REDIS_URL = key_store_url
    assert get_client() is client  # falls back to REDIS_URL
    settings.BYOK_REDIS_URL = _closed_port_url()
    assert get_client() is not client


def test_redis_keys_parse_back_and_match_the_scan_pattern():
    tenant, run = str(uuid.uuid4()), str(uuid.uuid4())
    name = redis_key(tenant_id=tenant, run_id=run, provider="openai")
    assert KEY_PATTERN == "swrly:byok:v1:*"
    assert name.startswith(KEY_PATTERN[:-1])
    assert parse_redis_key(name) == (tenant, run, "openai")
    assert parse_redis_key(name.encode()) == (tenant, run, "openai")
    assert name == f"swrly:byok:v1:{{{shard(tenant, run)}}}:{tenant}:{run}:openai"
    other = "00" if shard(tenant, run) != "00" else "01"
    for bad in (
        "swrly-cache:1:x",
        "swrly:byok:v1:a:b",
        "swrly:byok:v1:a:b:c:d",
        "swrly:byok:v1::b:c",
        f"swrly:byok:v1:{tenant}:{run}:openai",  # untagged: the previous release's form
        f"swrly:byok:v1:{{{other}}}:{tenant}:{run}:openai",  # a tag not the ids' own
    ):
        with pytest.raises(ValueError, match=r"not a BYOK token key|must be 1-64"):
            parse_redis_key(bad)


def test_a_canary_key_never_appears_in_redis_logs_or_exceptions(new_run, raw, caplog):
    canary = _canary()
    ids = new_run()
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        receipt = deposit(**ids, provider="anthropic", key=canary)
        stored = raw.get(receipt.redis_key)
        assert canary.encode() not in stored
        assert canary.removeprefix("sk-ant-canary-").encode() not in stored  # 32 hex digits
        assert canary not in receipt.redis_key
        assert canary not in repr(receipt)
        with pytest.raises(TokenExists) as exists:
            deposit(**ids, provider="anthropic", key=canary)
        seen.append(_exception_text(exists.value))
        with pytest.raises(InvalidKey) as invalid:
            deposit(**new_run(), provider="anthropic", key=canary + " ")
        seen.append(_exception_text(invalid.value))
        moved = new_run()
        raw.set(redis_key(**moved, provider="anthropic"), stored, ex=60)
        with pytest.raises(TokenAuthenticationFailed) as failed:
            consume(**moved, provider="anthropic")
        seen.append(_exception_text(failed.value))
        with consume(**ids, provider="anthropic") as secret:
            assert secret.reveal() == canary
            assert canary in live_secrets()
            seen += [str(secret), repr(secret), f"{secret}"]
        assert canary not in live_secrets()
        with pytest.raises(TokenMissing) as missing:
            consume(**ids, provider="anthropic")
        seen.append(_exception_text(missing.value))
    seen.append(caplog.text)
    for text in seen:
        assert canary not in text


def test_an_error_report_of_a_failed_deposit_hides_the_key(new_run, settings):
    # Not shaped like a provider key: only sensitive_variables() can hide it in frame locals.
    canary = "canary-" + secrets.token_hex(16)
    settings.BYOK_REDIS_URL = _closed_port_url()
    with pytest.raises(KeyStoreUnavailable) as caught:
        deposit(**new_run(), provider="anthropic", key=canary)
    exc = caught.value
    reporter = ExceptionReporter(RequestFactory().get("/"), type(exc), exc, exc.__traceback__)
    frames = [f for f in reporter.get_traceback_frames() if "/swrly/keys/" in f["filename"]]
    assert {f["function"] for f in frames} >= {"deposit"}
    for frame in frames:
        assert canary not in repr(frame["vars"])


def test_a_rejected_token_is_logged_as_a_security_event(caplog):
    from swrly.keys.store import get_client, redis_key

    tenant_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
    swrly.keys.deposit(
        tenant_id=tenant_id, run_id=run_id, provider="openai", key="sk-proj-" + "q" * 30
    )
    name = redis_key(tenant_id=tenant_id, run_id=run_id, provider="openai")
    token = bytearray(get_client().get(name))
    token[-1] ^= 0x01
    get_client().set(name, bytes(token))
    with (
        caplog.at_level(logging.WARNING, logger="swrly.security"),
        pytest.raises(swrly.keys.TokenAuthenticationFailed),
    ):
        swrly.keys.consume(tenant_id=tenant_id, run_id=run_id, provider="openai")
    (record,) = [r for r in caplog.records if r.name == "swrly.security"]
    assert run_id in record.getMessage()
    assert "q" * 30 not in caplog.text


def test_a_forked_child_builds_its_own_key_store_client():
    parent = get_client()

    def child_has_its_own() -> bool:
        own = get_client()
        return (
            own is not parent
            and primaries(own)[0].connection_pool is not primaries(parent)[0].connection_pool
            and own.ping()
        )

    assert true_in_forked_child(child_has_its_own)
    assert get_client() is parent
