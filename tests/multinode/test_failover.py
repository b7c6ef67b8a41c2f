"""Multi-node failover under load (issue 14 §7): correctness through four faults in a row.

The topology is tests/multinode/cluster.py's: two web nodes behind a load balancer, two
run-worker nodes, a maintenance worker and beat, PostgreSQL through PgBouncer (transaction
mode), the key store on Sentinel (or one Valkey), a separate cache Valkey, RabbitMQ.

Load: CLIENTS threads, each from its own loopback address (127.0.0.2 and up), POST a 2-step
sandbox run through the balancer with a fresh sandbox key and an Idempotency-Key, retry the
same request on any 5xx, 429 or connection error, then poll the run through the balancer until
it ends, and start the next one. Phases: steady → the key store's primary lost → a run-worker
node SIGKILLed → a web node restarted → steady.

Asserted (correctness only, never a duration): every run ends; no key is consumed twice or
reaches the provider outside its own run (before its claim or after its end); every key a
client gave up on never reached the provider; runs that lost their token fail `key_missing`,
say so, and end long before the token's TTL; every audit chain verifies; the web nodes saw
the clients' own addresses through the balancer; runs succeed after the last fault. Printed
(`-s`): runs/s per phase, failed runs by error code, POST errors, time to recover.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.multinode import cluster as topology
from tests.multinode.conftest import required

pytestmark = pytest.mark.multinode

CLIENTS = 6
STEPS = [
    {
        "name": "draft",
        "provider": "sandbox",
        "model": "sandbox-1",
        "prompt": "[sandbox:sleep=0.3] draft about {{ input.topic }}",
    },
    {
        "name": "review",
        "provider": "sandbox",
        "model": "sandbox-1",
        "prompt": "[sandbox:sleep=0.3] review {{ steps.draft.output }}",
    },
]
# Seconds of load in each phase (after the phase's fault, when it has one).
PHASES = (
    ("steady", 20),
    ("key store", 15),
    ("worker killed", 30),
    ("web restart", 15),
    ("steady again", 20),
)
TERMINAL = {"succeeded", "failed", "cancelled"}
POST_GIVE_UP = 60.0  # a client stops retrying one POST after this long
POLL_GIVE_UP = 120.0  # and stops polling one run after this long (the test then checks the DB)
MAINTENANCE_EVERY = 2.0  # seconds between reaper/sweeper rounds (beat's 60 s is too long here)
# Runs posted at once just before the key store's primary is lost: a backlog whose tokens are
# in the key store, not yet taken, when it goes (the steady clients alone keep almost none).
BURST = 24


@dataclass
class Submission:
    """One run as a client asked for it: its key, its Idempotency-Key, what it got back."""

    client: int
    key: str
    idempotency_key: str
    first_post: float
    run_id: str | None = None
    attempts: list[str] = field(default_factory=list)  # every answer or error, in order
    final_status: str | None = None


@dataclass
class Load:
    base_url: str
    token: str
    workflow: str
    stop: threading.Event = field(default_factory=threading.Event)  # no new runs
    abort: threading.Event = field(default_factory=threading.Event)  # no more waiting either
    lock: threading.Lock = field(default_factory=threading.Lock)
    submissions: list[Submission] = field(default_factory=list)
    post_errors: list[tuple[float, str]] = field(default_factory=list)  # (when, status/error)
    poll_errors: Counter[str] = field(default_factory=Counter)

    def client_address(self, index: int) -> str:
        return f"127.0.0.{2 + index}"

    def burst(self, count: int, threads: int = 4) -> None:
        """`count` runs posted by `threads` threads of one more client, not waited for."""

        def post(share: int) -> None:
            transport = httpx.HTTPTransport(local_address=self.client_address(CLIENTS))
            headers = {"Authorization": f"Bearer {self.token}"}
            with httpx.Client(
                base_url=self.base_url, transport=transport, headers=headers, timeout=30
            ) as http:
                for _ in range(share):
                    self._post(http, CLIENTS)

        posting = [threading.Thread(target=post, args=(count // threads,)) for _ in range(threads)]
        for thread in posting:
            thread.start()
        for thread in posting:
            thread.join()

    def run_client(self, index: int) -> None:
        transport = httpx.HTTPTransport(local_address=self.client_address(index))
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(
            base_url=self.base_url, transport=transport, headers=headers, timeout=30
        ) as http:
            while not self.stop.is_set():
                submission = self._post(http, index)
                if submission.run_id is not None:
                    self._poll(http, submission)

    def _post(self, http: httpx.Client, index: int) -> Submission:
        submission = Submission(
            client=index,
            key=f"sk-sandbox-mn{index}-{secrets.token_urlsafe(18)}",
            idempotency_key=str(uuid.uuid4()),
            first_post=time.time(),
        )
        with self.lock:
            self.submissions.append(submission)
        body = {
            "workflow": self.workflow,
            "input": {"topic": "failover"},
            "provider_keys": {"sandbox": submission.key},
        }
        while time.time() - submission.first_post < POST_GIVE_UP and not self.abort.is_set():
            wait = 0.2
            try:
                response = http.post(
                    "/api/v1/runs/",
                    json=body,
                    headers={"Idempotency-Key": submission.idempotency_key},
                )
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            else:
                outcome = str(response.status_code)
                if response.status_code in (200, 201, 202):
                    submission.attempts.append(outcome)
                    submission.run_id = response.json()["id"]
                    return submission
                if response.status_code == 429:
                    wait = float(response.headers.get("Retry-After") or 1)
                elif response.status_code < 500:  # the test's own mistake: stop here
                    submission.attempts.append(f"{outcome} {response.text[:200]}")
                    self.stop.set()
                    return submission
            submission.attempts.append(outcome)
            with self.lock:
                self.post_errors.append((time.time(), outcome))
            time.sleep(wait)
        return submission

    def _poll(self, http: httpx.Client, submission: Submission) -> None:
        started = time.monotonic()
        while time.monotonic() - started < POLL_GIVE_UP and not self.abort.is_set():
            try:
                response = http.get(f"/api/v1/runs/{submission.run_id}/")
            except httpx.HTTPError as exc:
                with self.lock:
                    self.poll_errors[type(exc).__name__] += 1
            else:
                if response.status_code == 200:
                    status = response.json()["status"]
                    if status in TERMINAL:
                        submission.final_status = status
                        return
                else:
                    with self.lock:
                        self.poll_errors[str(response.status_code)] += 1
            time.sleep(0.1)


def _api(cluster: topology.Cluster, token: str) -> str:
    """The load's workflow, created through the balancer."""
    assert cluster.balancer is not None
    response = httpx.post(
        f"{cluster.balancer.url}/api/v1/workflows/",
        json={"name": "failover", "steps": STEPS},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _maintain_until(cluster: topology.Cluster, done: threading.Event) -> None:
    while not done.wait(MAINTENANCE_EVERY):
        try:
            cluster.maintain()
        except Exception as exc:
            print(f"  (maintenance round not sent: {type(exc).__name__})")  # noqa: T201


def test_failover_under_load(tmp_path: Path) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    missing = topology.missing_services()
    if missing:
        if required():
            pytest.fail("; ".join(missing))
        pytest.skip("; ".join(missing))

    with topology.start_cluster(tmp_path) as cluster:
        try:
            _scenario(cluster)
        except BaseException:
            print(cluster.logs())  # noqa: T201
            raise


def _scenario(cluster: topology.Cluster) -> None:
    keys = cluster.keys
    assert keys is not None
    assert cluster.sandbox is not None
    assert cluster.balancer is not None
    cluster.manage(
        "create-tenant", "multinode", "--name", "Multinode", "--owner-email", "o@mn.example"
    )
    token = cluster.manage(
        "create-api-token", "multinode", "--name", "load", "--role", "developer"
    ).split()[-1]
    workflow = _api(cluster, token)
    load = Load(base_url=cluster.balancer.url, token=token, workflow=workflow)
    maintenance_done = threading.Event()
    maintainer = threading.Thread(target=_maintain_until, args=(cluster, maintenance_done))
    maintainer.start()
    clients = [threading.Thread(target=load.run_client, args=(i,)) for i in range(CLIENTS)]

    def key_store_lost() -> tuple[float, str]:
        load.burst(BURST)  # part of the phase before: the backlog the fault finds
        began = time.time()
        return began, f"{keys.fault()} ({BURST} runs posted at once just before)"

    def worker_killed() -> tuple[float, str]:
        began = time.time()
        cluster.kill_worker(0)
        return began, "run-worker node 1 SIGKILLed"

    def web_restarted() -> tuple[float, str]:
        began = time.time()
        cluster.restart_web(0)
        return began, "web node 1 restarted (SIGTERM, then started again)"

    faults: dict[str, Callable[[], tuple[float, str]]] = {
        "key store": key_store_lost,
        "worker killed": worker_killed,
        "web restart": web_restarted,
    }
    marks: list[tuple[str, float, float, str]] = []  # (phase, fault start, phase start, what)
    sampler = topology.CpuSampler(cluster).start()
    try:
        for thread in clients:
            thread.start()
        for phase, seconds in PHASES:
            began, what = faults[phase]() if phase in faults else (time.time(), "")
            marks.append((phase, began, time.time(), what))
            if load.stop.wait(seconds):
                break
    except BaseException:
        load.abort.set()
        raise
    finally:
        load.stop.set()
        for thread in clients:
            thread.join(timeout=POST_GIVE_UP + POLL_GIVE_UP)
    end = time.time()
    try:
        _wait_terminal(cluster)
    finally:
        maintenance_done.set()
        maintainer.join()
        cpu = sampler.stop()
    refused = [s.attempts for s in load.submissions if s.run_id is None]
    assert len(marks) == len(PHASES), f"the load stopped early; POSTs not accepted: {refused}"
    _check_and_report(cluster, load, marks, end, cpu)


def _wait_terminal(cluster: topology.Cluster) -> None:
    topology.wait_until(
        lambda: (
            not cluster.query(
                "SELECT 1 FROM runs_run WHERE status NOT IN ('succeeded', 'failed', 'cancelled')"
            )
        ),
        timeout=120,
        what="every run to end (queued or running ones are left)",
    )


def _check_and_report(
    cluster: topology.Cluster,
    load: Load,
    marks: list[tuple[str, float, float, str]],
    end: float,
    cpu: dict[str, float],
) -> None:
    assert cluster.sandbox is not None
    assert cluster.balancer is not None
    ttl = int(topology.TIMINGS["BYOK_TOKEN_TTL"])
    runs = {
        str(row[0]): row
        for row in cluster.query(
            "SELECT id, status, error_code, error_message, created_at, keys_consumed_at,"
            " finished_at FROM runs_run"
        )
    }
    by_key = {s.key: s for s in load.submissions}
    accepted = [s for s in load.submissions if s.run_id is not None]
    given_up = [s for s in load.submissions if s.run_id is None]
    stuck = {pk: row[1] for pk, row in runs.items() if row[1] not in TERMINAL}

    # Every accepted submission has its run; one run per Idempotency-Key, none unaccounted for.
    assert {s.run_id for s in accepted} <= set(runs)
    idempotency = cluster.query("SELECT key, run_id FROM runs_idempotencykey")
    assert len(idempotency) == len(runs), "a run without its Idempotency-Key, or one more"
    assert {str(run) for _, run in idempotency} == {s.run_id for s in accepted}

    # The provider's side: which key reached it, when.
    calls: dict[str, list[float]] = defaultdict(list)
    for request in cluster.sandbox.requests:
        presented = request.headers.get("x-api-key") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        calls[presented].append(request.received_at)
    consumed = Counter(
        str(target).removeprefix("run:")
        for (target,) in cluster.query(
            "SELECT target FROM tenants_auditevent WHERE action = 'key.consumed'"
        )
    )
    unknown = set(calls) - set(by_key)
    reused = {key: len(at) for key, at in calls.items() if len(at) > len(STEPS)}
    consumed_twice = {run: n for run, n in consumed.items() if n > 1}
    outside: list[str] = []
    never_consumed: list[str] = []
    for key, times in calls.items():
        submission = by_key.get(key)
        if submission is None or submission.run_id is None:
            outside.append(f"a key with no run reached the provider ({len(times)} calls)")
            continue
        _, _, _, _, _, claimed_at, finished_at = runs[submission.run_id]
        if consumed[submission.run_id] == 0:
            never_consumed.append(submission.run_id)
        for at in times:
            if claimed_at is None or at < claimed_at.timestamp():
                outside.append(f"run {submission.run_id}: a call before its claim")
            if finished_at is not None and at > finished_at.timestamp():
                outside.append(f"run {submission.run_id}: a call after its end")

    missing = [row for row in runs.values() if row[2] == "key_missing"]
    slow_missing = [
        (str(row[0]), (row[6] - row[4]).total_seconds())
        for row in missing
        if row[6] is None or (row[6] - row[4]).total_seconds() >= ttl
    ]
    unsaid = [str(row[0]) for row in missing if "key_missing" not in row[3]]
    # A key store without a replica loses every token it held: each run deposited before it
    # went and claimed after it came back must fail key_missing (never run, never wait).
    lost_not_missing = []
    assert cluster.keys is not None
    if cluster.keys.kind == "plain":
        _, went, back, _ = next(mark for mark in marks if mark[0] == "key store")
        lost_not_missing = [
            (str(row[0]), row[1], row[2])
            for row in runs.values()
            if row[4].timestamp() < went
            and row[5] is not None
            and row[5].timestamp() > back
            and row[2] != "key_missing"
        ]

    audit_ips = Counter(
        str(ip)
        for (ip,) in cluster.query("SELECT ip FROM tenants_auditevent WHERE action = 'run.created'")
    )
    verify = cluster.manage("verify-audit", "--full")

    _report(cluster, load, marks, end, runs, consumed, calls, missing, audit_ips, verify, cpu)

    assert not stuck, f"runs not ended: {stuck}"
    assert not unknown, f"{len(unknown)} keys reached the provider that no client sent"
    assert not reused, f"keys used more often than their run's steps: {reused}"
    assert not consumed_twice, f"runs whose key was consumed twice: {consumed_twice}"
    assert not outside, outside[:20]
    assert not never_consumed, f"calls with keys never consumed (audit): {never_consumed[:5]}"
    assert not [s.key for s in given_up if s.key in calls], "a key given up on was used"
    assert not slow_missing, f"key_missing only after the token's TTL: {slow_missing}"
    assert not unsaid, f"key_missing runs whose error does not say so: {unsaid}"
    assert not lost_not_missing, f"runs whose token was lost, not key_missing: {lost_not_missing}"
    assert "BROKEN" not in verify, verify
    assert "ok " in verify, verify
    clients = {load.client_address(i) for i in range(CLIENTS + 1)}
    assert set(audit_ips) <= clients, f"run.created from {audit_ips} (clients: {clients})"
    after = marks[-1][2]
    succeeded_after = [
        row for row in runs.values() if row[1] == "succeeded" and row[6].timestamp() > after
    ]
    assert succeeded_after, "no run succeeded after the last fault"
    assert all(
        node.alive() for node in [*cluster.web, cluster.run_workers[1], *cluster.maintenance]
    ), cluster.logs()


def _report(
    cluster: topology.Cluster,
    load: Load,
    marks: list[tuple[str, float, float, str]],
    end: float,
    runs: dict[str, tuple[Any, ...]],
    consumed: Counter[str],
    calls: dict[str, list[float]],
    missing: list[tuple[Any, ...]],
    audit_ips: Counter[str],
    verify: str,
    cpu: dict[str, float],
) -> None:
    """The figures, printed (`-s`): what CI logs and docs/performance.md show."""
    assert cluster.keys is not None
    assert cluster.balancer is not None
    out: list[str] = []
    say = out.append
    finished = sorted(
        (row[6].timestamp(), row[1], row[2] or "none") for row in runs.values() if row[6]
    )
    say("")
    say("== multi-node failover: figures ==")
    say(
        f"key store: {cluster.keys.kind}; {CLIENTS} clients; 2 web nodes, 2 run-worker nodes "
        "(threads x 4), 1 maintenance worker, beat; PgBouncer (transaction); RabbitMQ"
    )
    say(f"runs: {len(runs)} ({Counter(row[1] for row in runs.values())})")
    say("")
    say(f"{'phase':<24} {'from':>6} {'secs':>5} {'ended/s':>8} {'succeeded/s':>12}  failed by code")
    edges: list[tuple[str, float]] = []
    for phase, began, start, what in marks:
        if what:  # a fault: while it is done (until the sentinels agree, the node is back)
            edges += [(f"{phase}: during", began), (f"{phase}: after", start)]
        else:
            edges.append((phase, began))
    edges.append(("end", end))
    origin = marks[0][1]
    steady = 0.0
    for (phase, start), (_, stop) in itertools.pairwise(edges):
        window = [f for f in finished if start <= f[0] < stop]
        seconds = max(stop - start, 1e-9)
        ok = sum(1 for f in window if f[1] == "succeeded")
        failed = Counter(f[2] for f in window if f[1] != "succeeded")
        if phase == "steady":
            steady = ok / seconds
        say(
            f"{phase:<24} {start - origin:>6.1f} {seconds:>5.1f} {len(window) / seconds:>8.2f}"
            f" {ok / seconds:>12.2f}  {dict(failed) or '-'}"
        )
    say("")
    for phase, began, start, what in [mark for mark in marks if mark[3]]:
        recovered = _recovery(finished, start, steady)
        say(
            f"{phase}: {what}; the fault took {start - began:.1f} s; succeeded/s back to half "
            f"the steady rate {recovered}"
        )
    codes = Counter(row[2] for row in runs.values() if row[1] == "failed")
    say(f"failed runs by error code: {dict(codes) or 'none'}")
    [(releases, released)] = cluster.query(
        "SELECT count(*), count(DISTINCT target) FROM tenants_auditevent"
        " WHERE action = 'run.released'"
    )
    say(
        f"runs given back to the queue (key store unavailable at their first GETDEL): "
        f"{released} ({releases} run.released events)"
    )
    if missing:
        spans = sorted((row[6] - row[4]).total_seconds() for row in missing)
        say(
            f"key_missing: {len(missing)} runs, ended {spans[0]:.1f}-{spans[-1]:.1f} s after "
            f"their POST (token TTL {topology.TIMINGS['BYOK_TOKEN_TTL']} s)"
        )

    def phase_at(at: float) -> str:
        started = [phase for phase, began, _, _ in marks if began <= at]
        return started[-1] if started else "start"

    errors = Counter(f"{outcome} in {phase_at(at)}" for at, outcome in load.post_errors)
    given_up = sum(1 for s in load.submissions if s.run_id is None)
    retried = sum(1 for s in load.submissions if s.run_id and len(s.attempts) > 1)
    say(
        f"POST errors seen by clients: {dict(errors) or 'none'}; POSTs that needed a retry: "
        f"{retried}; given up: {given_up}; poll errors: {dict(load.poll_errors) or 'none'}"
    )
    stats = cluster.balancer.stats.snapshot()
    say("balancer: " + ", ".join(f"{name} {count}" for name, count in sorted(stats.items())))
    say(
        f"provider calls: {sum(len(t) for t in calls.values())} with {len(calls)} keys; "
        f"key.consumed events: {sum(consumed.values())} for {len(consumed)} runs"
    )
    ended = max(1, sum(1 for row in runs.values() if row[6]))
    requests = max(1, sum(n for what, n in stats.items() if what.startswith("127.0.0.1:")))
    per_run = ", ".join(
        f"{role} {cpu_s * 1e3 / ended:.1f} ms" for role, cpu_s in sorted(cpu.items())
    )
    say(
        f"CPU per run ended: {per_run} ({ended} runs; web {cpu.get('web', 0) * 1e3 / requests:.1f}"
        f" ms per request of {requests}, the clients' polling GETs included; PostgreSQL,"
        " PgBouncer, RabbitMQ and Valkey not counted)"
    )
    say(f"run.created client addresses seen by the web nodes: {dict(audit_ips)}")
    say("verify-audit --full: " + " | ".join(verify.strip().splitlines()))
    print("\n".join(out))  # noqa: T201
    (cluster.workdir / "figures.json").write_text(json.dumps({"lines": out}))


def _recovery(finished: list[tuple[float, str, str]], start: float, steady: float) -> str:
    """When, after `start`, 3 s of successes first reached half the steady rate again."""
    if steady <= 0:
        return "(no steady rate)"
    ok = [at for at, status, _ in finished if status == "succeeded" and at >= start]
    for at in ok:
        if sum(1 for other in ok if at <= other < at + 3.0) >= 0.5 * steady * 3.0:
            return f"{at - start:.1f} s after the fault"
    return "not within the phase"
