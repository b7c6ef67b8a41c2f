"""Running a run: claim it, take its keys once, call the providers step by step, let go.

The claim is a conditional update (`queued` → `running`, `keys_consumed_at` set) committed
before any token is taken: a duplicate delivery of the task, or a token a Redis failover brought
back, can never run the run a second time. Every key is released when the run ends, however it
ends. A claim that would put the tenant over its running limit (runs.fairness) is rolled back
before any token is taken (TenantBusy): the run stays queued, and `run_defer` enqueues it again.
A key store that does not answer the run's first GETDEL gives the claim back (RunReleased, see
`_release`): the run is queued again with its tokens, and the task tries it again later.

Transactions (a run of n steps commits n + 2 times): the claim (with `run.started`, and the
reads the run needs); the first step's start, with `key.consumed` for every key taken; then,
between two calls, one transaction records the answer of step i and starts step i + 1 (the run
checked alive, its heartbeat written), so a page always shows the step in flight as `running`;
the last answer is recorded with the run's end. A streamed step also writes its output so far,
redacted, at most every STREAM_PROGRESS_INTERVAL seconds while it arrives (`_StreamProgress`:
two autocommitted statements, the run's heartbeat and the step's text); a cancellation seen
there stops the step at once. Audit events go through `audited_atomic`: the
chain head is locked only for the last statements before each commit. Rows are written with
`update_fields`, never read back.
"""

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from runs.fairness import may_start
from runs.models import Run, RunError, RunStatus, StepRun, StepStatus
from runs.providers import (
    ModelCall,
    ModelResult,
    ProviderError,
    call_provider,
    provider_client,
)
from runs.providers.base import KEY_LEAK_BLOCKED, CallStopped
from runs.providers.egress import Destination, EgressRefused, provider_destination
from runs.queue import enqueue_run
from runs.tokens import discard_token_best_effort
from runs.workflow_spec import policy_problems, render
from swrly import keys, metrics
from swrly.audit.writer import Actor, audit_record, audit_under_lock, audited_atomic
from swrly.custody.services import fingerprint_salt
from swrly.input_limits import storable
from swrly.keys.fingerprint import fingerprint_matches, fingerprint_version
from swrly.keys.redaction import redact
from swrly.keys.secret import ProviderSecret
from tenants.policy import provider_policy

log = logging.getLogger(__name__)


class RunAborted(Exception):
    """The run ends early with `code`; `message` is safe to store and show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def worker_name() -> str:
    return socket.gethostname()


T = TypeVar("T")
DB_ATTEMPTS = 3  # a write after the claim is tried this many times, each on a fresh connection
DB_RETRY_DELAY = 0.2  # seconds before the second attempt; doubled before each later one
LOST_CONNECTION = (OperationalError, InterfaceError)


class ClaimFailed(Exception):
    """The database did not answer the claim: the run is still queued and must be asked again."""


class RunReleased(Exception):
    """The key store did not answer the run's first GETDEL: the claim was given back, no key
    taken; the run is queued with its tokens and is to be tried again (`_release`)."""


def _with_db_retry(what: str, write: Callable[[], T]) -> T:
    """Run `write`; when the database connection is lost, close it and try again on a fresh one.

    Only outside a transaction (inside one, the caller's whole transaction is what must be
    retried) and only for writes that are safe to repeat: conditional updates, saves of the
    whole row, or an audit event whose transaction did not commit.
    """
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            return write()
        except LOST_CONNECTION as exc:
            if attempt == DB_ATTEMPTS or connection.in_atomic_block:
                raise
            log.warning(
                "database error while %s (%s); retrying on a fresh connection",
                what,
                type(exc).__name__,
            )
            connection.close()
            time.sleep(DB_RETRY_DELAY * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


@dataclass
class _Progress:
    """What the executor holds that is not written yet: it goes into the next transaction."""

    step_runs: list[StepRun]
    salt: bytes | None  # the tenant's fingerprint salt, read with the claim
    unsaved: StepRun | None = None  # a step whose answer (or failure) is not recorded yet
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (action, metadata)


# What recording a step's answer or failure writes, and what starting it writes.
RESULT_FIELDS = (
    "status",
    "output_text",
    "input_tokens",
    "output_tokens",
    "provider_request_id",
    "http_status",
    "latency_ms",
    "attempts",
    "error",
    "finished_at",
    "destination_scheme",
    "destination_host",
    "destination_port",
    "ttft_ms",
)
START_FIELDS = (
    "status",
    "started_at",
    "destination_scheme",
    "destination_host",
    "destination_port",
)


def run_execute(
    *, run_id: str, worker: str | None = None, pause: Callable[[float], None] = time.sleep
) -> Run | None:
    """Execute a queued run. Returns None when the run was not queued (already claimed).

    TenantBusy when the run's tenant is at its running limit: the run was left queued, its keys
    untouched (see `run_defer`). RunReleased when the key store did not answer before any key
    was taken: the run is queued again, its keys untouched, to be tried again
    RUN_KEY_STORE_RETRY_DELAY seconds later (see `_release`).

    `pause(seconds)` waits between a provider call's attempts (see runs.providers.client.send).
    """
    worker = worker or worker_name()
    actor = Actor.system(f"worker {worker}")
    claimed = _claim(run_id, worker, actor)
    if claimed is None:
        log.info("run %s was not queued; nothing to do", run_id)
        return None
    run, progress = claimed
    secrets: dict[str, ProviderSecret] = {}
    try:
        _refuse_by_policy(run, progress)
        secrets = _take_keys(run, actor, progress)
        _run_steps(run, secrets, actor, pause, progress)
    except RunReleased:
        raise  # queued again, nothing taken: nothing to end
    except RunAborted as aborted:
        _finish(run, actor, RunStatus.FAILED, aborted.code, aborted.message, secrets, progress)
    except _Stopped:
        _finish(run, actor, RunStatus.CANCELLED, "", "cancelled while running", secrets, progress)
    except Exception:
        log.exception("run %s failed unexpectedly", run_id)
        _finish(
            run,
            actor,
            RunStatus.FAILED,
            RunError.INTERNAL_ERROR,
            "internal error",
            secrets,
            progress,
        )
        raise
    else:
        _finish(run, actor, RunStatus.SUCCEEDED, "", "", secrets, progress)
    finally:
        for secret in secrets.values():
            secret.discard()
    return run


# The claimed run is read with its tenant and the tenant's fingerprint salt, in one query.
CLAIM_JOINS = ("tenant", "tenant__fingerprint_salt")


def _claim(run_id: str, worker: str, actor: Actor) -> tuple[Run, _Progress] | None:
    """Claim the run on a working connection; ClaimFailed when the database never answered.

    A claim whose commit was sent but whose answer was lost is recognised by its mark
    (`worker` and `started_at` exactly as this call wrote them) and kept.
    """
    now = timezone.now()
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            return _claim_once(run_id, worker, actor, now)
        except LOST_CONNECTION as exc:
            log.warning(
                "database error while claiming run %s (%s); retrying on a fresh connection",
                run_id,
                type(exc).__name__,
            )
            connection.close()
            time.sleep(DB_RETRY_DELAY * 2 ** (attempt - 1))
            try:
                with transaction.atomic():
                    mine = (
                        Run.objects.select_related(*CLAIM_JOINS)
                        .filter(pk=run_id, status=RunStatus.RUNNING, worker=worker, started_at=now)
                        .first()
                    )
                    if mine is not None:
                        return mine, _progress(mine)
            except LOST_CONNECTION:
                connection.close()
                continue
    raise ClaimFailed(f"the database did not answer the claim of run {run_id}")


def _claim_once(
    run_id: str, worker: str, actor: Actor, now: datetime
) -> tuple[Run, _Progress] | None:
    with audited_atomic():
        claimed = Run.objects.filter(
            pk=run_id, status=RunStatus.QUEUED, keys_consumed_at=None
        ).update(
            status=RunStatus.RUNNING,
            keys_consumed_at=now,
            started_at=now,
            heartbeat_at=now,
            worker=worker,
        )
        if not claimed:
            return None
        run = Run.objects.select_related(*CLAIM_JOINS).get(pk=run_id)
        progress = _progress(run)  # read here: in this transaction, not one of their own
        audit_record(
            tenant=run.tenant,
            action="run.started",
            actor=actor,
            target=f"run:{run.pk}",
            metadata={"worker": worker},
        )
        # Under the chain head, which every claim of the tenant takes: the tenant's running runs
        # (this one included) are counted after the claim before has committed. Over the limit,
        # the claim is rolled back: the run stays queued and no key has been taken.
        audit_under_lock(partial(may_start, run.tenant))
    return run, progress


def run_defer(run_id: str) -> None:
    """Put back a run whose claim was refused at its tenant's running limit (TenantBusy).

    The run is still queued with its keys; it is enqueued again to be tried RUN_DEFER_DELAY
    seconds from now. Its `requeued_at` is set, so the sweeper (`runs_requeue`) leaves it alone
    while it is deferred this way, and takes it over if that message is lost (a broker that
    refuses it, a worker that dies holding it). The wait counts against the keys' TTL: the
    tenant's queued limit bounds it (docs/operations.md, "Fairness and backpressure").
    """
    metrics.run_deferred()
    if not Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        requeued_at=timezone.now()
    ):
        return  # cancelled or claimed meanwhile
    try:
        enqueue_run(run_id, countdown=settings.RUN_DEFER_DELAY)
    except Exception as exc:
        log.warning(
            "run %s could not be enqueued again (%s); the sweeper will",
            run_id,
            type(exc).__name__,
        )


def _progress(run: Run) -> _Progress:
    """The run's step rows, and its tenant's fingerprint salt when a key is checked with it."""
    v2 = any(
        fingerprint_version(entry.get("fingerprint") or "") == 2
        for entry in run.key_fingerprints.values()
    )
    salt = None
    if v2:
        try:  # read with the run (CLAIM_JOINS); made by custody if the tenant has none yet
            salt = bytes.fromhex(run.tenant.fingerprint_salt.salt)
        except ObjectDoesNotExist:
            salt = fingerprint_salt(tenant=run.tenant)
    return _Progress(
        step_runs=list(StepRun.objects.filter(run=run).order_by("position")), salt=salt
    )


def _refuse_by_policy(run: Run, progress: _Progress) -> None:
    """RunAborted (`policy_refused`) when the tenant's policy, as read with the claim, no longer
    allows a provider or model of the run (narrowed after the run was queued).

    No key is taken: every token of the run is deleted, each `key.discarded` (reason
    `policy_refused`) recorded with the run's end, as for the other failures before a start.
    """
    problems = policy_problems(run.steps, provider_policy(run.tenant))
    if not problems:
        return
    for provider in run.providers:
        found = discard_token_best_effort(run.tenant_id, run.pk, provider)
        progress.events.append(
            (
                "key.discarded",
                {
                    "provider": provider,
                    "fingerprint": run.key_fingerprints.get(provider, {}).get("fingerprint"),
                    "token_found": found,
                    "reason": RunError.POLICY_REFUSED,
                },
            )
        )
    detail = "; ".join(f"{where}: {' '.join(messages)}" for where, messages in problems.items())
    raise RunAborted(RunError.POLICY_REFUSED, f"refused by the tenant's policy: {detail}")


def _take_keys(run: Run, actor: Actor, progress: _Progress) -> dict[str, ProviderSecret]:
    """GETDEL every key the run needs. Any failure aborts the run; the rest are discarded.

    Except a key store that does not answer the first GETDEL: no key is held yet, so the run is
    given back to the queue with every token (RunReleased, `_release`) rather than failed. Once
    a key is taken, its plaintext is in this worker's memory: a later failure fails the run.

    `key.consumed` is recorded with the first step's start (or the run's end, if no step
    starts): in the first transaction after the keys are taken, before any call uses them.
    """
    secrets: dict[str, ProviderSecret] = {}
    providers = run.providers
    try:
        for provider in providers:
            secrets[provider] = _take_key(run, provider, actor, progress, first=not secrets)
    except RunAborted:
        for provider in providers:
            if provider not in secrets:
                discard_token_best_effort(run.tenant_id, run.pk, provider)
        for secret in secrets.values():
            secret.discard()
        raise
    return secrets


def _take_key(
    run: Run, provider: str, actor: Actor, progress: _Progress, *, first: bool
) -> ProviderSecret:
    expected = run.key_fingerprints.get(provider, {}).get("fingerprint")
    common = {"provider": provider, "fingerprint": expected, "worker": run.worker}
    try:
        secret = keys.consume(tenant_id=run.tenant_id, run_id=run.pk, provider=provider)
    except keys.TokenMissing:
        if run.keys_expire_at is not None and timezone.now() >= run.keys_expire_at:
            action, code = "key.expired", RunError.KEY_EXPIRED
        else:  # gone before its TTL: discarded, evicted, or taken by someone else
            action, code = "key.missing", RunError.KEY_MISSING
        _audit(run, action, actor, common)
        raise RunAborted(code, f"the {provider} key was not in the key store ({code})") from None
    except (keys.TokenAuthenticationFailed, keys.UnknownKeyId) as exc:
        _audit(run, "key.rejected", actor, {**common, "reason": type(exc).__name__})
        raise RunAborted(RunError.KEY_REJECTED, f"the stored {provider} key was rejected") from None
    except keys.KeyStoreUnavailable:
        if first and _release(run, provider, actor):
            raise RunReleased(
                f"the key store did not answer; run {run.pk} is queued again"
            ) from None
        raise RunAborted(
            RunError.KEY_STORE_UNAVAILABLE, "the key store did not answer when the run started"
        ) from None
    salt = progress.salt if fingerprint_version(expected or "") == 2 else b""
    if expected is None or not fingerprint_matches(
        provider=provider, key=secret.reveal(), expected=expected, salt=salt or b""
    ):
        secret.discard()
        _audit(run, "key.rejected", actor, {**common, "reason": "fingerprint mismatch"})
        raise RunAborted(RunError.KEY_REJECTED, f"the stored {provider} key was not the one given")
    consumed = {**common, "encryption_key_id": secret.key_id_hex}
    destination = _allowed_destination(provider)
    if destination is not None:  # the one address the allow-list lets this key go to
        consumed["destination"] = destination.origin
    progress.events.append(("key.consumed", consumed))
    return secret


def _release(run: Run, provider: str, actor: Actor) -> bool:
    """Give the claim back: the run queued again as before its claim, `run.released` audited, in
    one transaction. False when it may not be: released RUN_KEY_STORE_RETRIES times already, keys
    valid for less than twice RUN_KEY_STORE_RETRY_DELAY, cancellation requested, or reaped.

    Safe because no key was taken. A GETDEL whose reply was lost may still have taken the token:
    the next attempt finds it gone and fails `key_missing`, which is what happened. A GETDEL
    that ran on a primary that died before replicating it: the promoted replica still holds the
    token, whose plaintext never reached this worker (the reply was lost), so the next attempt
    uses the key once. Once queued, the run is what it was before its claim: the orphan-token
    sweep leaves its tokens alone, `run_cancel` cancels it and discards them, it no longer
    counts against its tenant's running limit, and its `requeued_at` keeps the sweeper from
    enqueueing it again while the task's retry is pending (and lets the sweeper take over if
    that message is lost). Its step rows are all still `pending`: no step starts before the keys
    are taken.
    """
    now = timezone.now()
    margin = timedelta(seconds=2 * settings.RUN_KEY_STORE_RETRY_DELAY)

    def release() -> bool:
        with audited_atomic():
            released = Run.objects.filter(
                pk=run.pk,
                status=RunStatus.RUNNING,
                cancel_requested_at=None,
                releases__lt=settings.RUN_KEY_STORE_RETRIES,
                keys_expire_at__gt=now + margin,
            ).update(
                status=RunStatus.QUEUED,
                keys_consumed_at=None,
                started_at=None,
                heartbeat_at=None,
                worker="",
                requeued_at=now,
                releases=F("releases") + 1,
            )
            if released:
                audit_record(
                    tenant=run.tenant,
                    action="run.released",
                    actor=actor,
                    target=f"run:{run.pk}",
                    metadata={
                        "reason": "key store unavailable",
                        "provider": provider,
                        "worker": run.worker,
                        "releases": run.releases + 1,
                    },
                )
                return True
        # An earlier attempt's commit whose answer was lost: the run carries this release's mark.
        return Run.objects.filter(
            pk=run.pk, status=RunStatus.QUEUED, requeued_at=now, releases=run.releases + 1
        ).exists()

    released = _with_db_retry(f"releasing run {run.pk}", release)
    if released:
        metrics.run_released()
        log.warning(
            "the key store did not answer run %s; the run is queued again (release %d of %d)",
            run.pk,
            run.releases + 1,
            settings.RUN_KEY_STORE_RETRIES,
        )
    return released


def _allowed_destination(provider: str) -> Destination | None:
    """Where the allow-list sends `provider`'s calls; None when it refuses them."""
    try:
        return provider_destination(provider)
    except EgressRefused:
        return None


class _Stopped(Exception):
    """The run may not go on: a cancellation was requested, or the reaper already ended it."""


def _run_steps(
    run: Run,
    secrets: dict[str, ProviderSecret],
    actor: Actor,
    pause: Callable[[float], None],
    progress: _Progress,
) -> None:
    with provider_client() as client:  # the run's steps share connections
        _run_steps_with(run, secrets, client, actor, pause, progress)


def _run_steps_with(
    run: Run,
    secrets: dict[str, ProviderSecret],
    client: Any,
    actor: Actor,
    pause: Callable[[float], None],
    progress: _Progress,
) -> None:
    # Outputs are redacted before anything uses them: stored, or rendered into a later step's
    # prompt, a key a provider echoed (in any encoding) is already [REDACTED].
    outputs: dict[str, str] = {}
    for step, step_run in zip(run.steps, progress.step_runs, strict=True):
        try:
            call = ModelCall(
                model=step["model"],
                prompt=render(step["prompt"], run_input=run.input, outputs=outputs),
                system=render(step["system"], run_input=run.input, outputs=outputs),
                max_tokens=step["max_tokens"],
                temperature=step["temperature"],
                stream=step.get("stream", False),  # steps saved before streaming have none
            )
        except (KeyError, TypeError) as exc:
            raise RunAborted(
                RunError.TEMPLATE_ERROR, f"step {step['name']}: could not render {exc}"
            ) from None
        _with_db_retry(
            f"starting step {step_run.position} of run {run.pk}",
            partial(_start_step, run, step_run, actor, progress),
        )
        streamed = _StreamProgress(run, step_run) if call.stream else None
        try:
            result = call_provider(
                step["provider"],
                secret=secrets[step["provider"]],
                call=call,
                client=client,
                pause=pause,
                on_text=streamed,
            )
        except CallStopped as stopped:
            stop = stopped.__cause__
            if not isinstance(stop, _Stopped):
                raise  # not a stop of ours: it ends the run as any error does
            # A cancellation (or the reaper) seen while the answer streamed: the call stopped,
            # after the provider had answered (and may bill what it generated).
            step_run.status = StepStatus.FAILED
            _record_call(step_run, stopped)
            step_run.output_text = streamed.so_far() if streamed is not None else ""
            step_run.error = STREAM_STOPPED
            step_run.finished_at = timezone.now()
            progress.unsaved = step_run  # recorded with the run's end
            raise stop from None
        except ProviderError as exc:
            metrics.step_finished(step["provider"], exc.code, exc.latency_ms)
            step_run.status = StepStatus.FAILED
            _record_call(step_run, exc)  # destination None: refused before anything was sent
            if streamed is not None:  # what arrived before the stream broke off
                step_run.output_text = streamed.so_far()
            step_run.error = storable(redact(exc.message))
            step_run.finished_at = timezone.now()
            progress.unsaved = step_run  # recorded with the run's end
            if exc.code == KEY_LEAK_BLOCKED:
                progress.events.append(
                    ("key.leak_blocked", {"provider": step["provider"], "step": step["name"]})
                )
            raise RunAborted(exc.code, f"step {step['name']}: {redact(exc.message)}") from None
        metrics.step_finished(step["provider"], "succeeded", result.latency_ms)
        output = storable(redact(result.text))
        step_run.status = StepStatus.SUCCEEDED
        step_run.output_text = output
        step_run.input_tokens = result.input_tokens
        step_run.output_tokens = result.output_tokens
        _record_call(step_run, result)
        step_run.finished_at = timezone.now()
        progress.unsaved = step_run  # recorded with the next step's start, or the run's end
        outputs[step["name"]] = output


def _record_call(step_run: StepRun, call: ModelResult | ProviderError | CallStopped) -> None:
    """What the step's provider call did, however it ended: status, request id, latency,
    attempts, where it went and the time to first text."""
    step_run.http_status = call.http_status
    step_run.provider_request_id = call.request_id
    step_run.latency_ms = call.latency_ms
    step_run.attempts = call.attempts
    step_run.destination = call.destination
    step_run.ttft_ms = call.ttft_ms


STREAM_STOPPED = (
    "stopped while the answer streamed (the run was cancelled or ended): the provider may bill "
    "what it had generated"
)
# A streamed step's output so far is written at most every STREAM_PROGRESS_INTERVAL seconds, and
# less often once it is long: one more interval per this many characters, so the bytes written
# per second stay bounded however long the answer grows.
PROGRESS_CHARS = 100_000


def shown_so_far(text: str) -> str:
    """A streamed answer's text so far as it may be shown: redacted, without its last word
    until whitespace follows it (a key split across two events is never shown in part), with
    what no column stores replaced. Linear in the text (str.rsplit, no backtracking)."""
    if text and not text[-1].isspace():
        parts = text.rsplit(None, 1)
        text = text[: len(text) - len(parts[-1])] if len(parts) == 2 else ""
    return storable(redact(text))


class _StreamProgress:
    """Hears a streamed step's text (call_provider's `on_text`) and writes what may be shown of
    it at most every STREAM_PROGRESS_INTERVAL seconds (less often past PROGRESS_CHARS): the
    run's heartbeat, then the step's output, each one autocommitted UPDATE. _Stopped when the
    run may not go on (a cancellation was requested, or the reaper ended it): the call stops
    there. A write the database refuses is skipped (the answer is recorded in full when the step
    ends)."""

    def __init__(self, run: Run, step_run: StepRun) -> None:
        self.run, self.step_run = run, step_run
        self.pieces: list[str] = []
        self.shown = ""  # the last output written
        self.due = time.monotonic() + settings.STREAM_PROGRESS_INTERVAL

    def __call__(self, text: str) -> None:
        self.pieces.append(text)
        if time.monotonic() >= self.due:
            self.write()

    def so_far(self) -> str:
        """What may be shown of the text heard so far (see shown_so_far)."""
        return shown_so_far("".join(self.pieces))

    def write(self) -> None:
        shown = self.so_far()
        try:
            alive = Run.objects.filter(
                pk=self.run.pk, status=RunStatus.RUNNING, cancel_requested_at=None
            ).update(heartbeat_at=timezone.now())
            if alive and shown != self.shown:
                StepRun.objects.filter(pk=self.step_run.pk).update(output_text=shown)
                self.shown = shown
        except DatabaseError as exc:
            log.warning(
                "run %s: the streamed output could not be written (%s)",
                self.run.pk,
                type(exc).__name__,
            )
            if isinstance(exc, OperationalError | InterfaceError):
                connection.close()  # the next statement opens a new connection
            alive = True  # not known: the next write (or the step's end) checks again
        finally:
            # From the write's end: a slow write is never followed at once by another.
            longer = max(1.0, len(shown) / PROGRESS_CHARS)
            self.due = time.monotonic() + settings.STREAM_PROGRESS_INTERVAL * longer
        if not alive:
            raise _Stopped


def _start_step(run: Run, step_run: StepRun, actor: Actor, progress: _Progress) -> None:
    """One transaction: the previous step's answer, this step `running`, pending audit events.

    _Stopped (after the commit: the answer and the events are kept) when the run may not go
    on: a cancellation was requested, or the reaper ended it.
    """
    now = timezone.now()
    done = progress.unsaved
    with audited_atomic():
        # One statement checks that the run may go on and records that the worker is alive.
        alive = Run.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, cancel_requested_at=None
        ).update(heartbeat_at=now)
        starting: list[StepRun] = []
        if alive:
            step_run.status, step_run.started_at = StepStatus.RUNNING, now
            # Where the call is about to go: recorded before it leaves, so a step whose answer
            # is lost (worker or database gone mid-call) still says where it may have gone.
            step_run.destination = _allowed_destination(step_run.provider)
            starting.append(step_run)
        # Two plain UPDATEs, not one bulk_update: its CASE WHEN expressions cost ~15 ms of
        # the worker's CPU per call to build (profiled), far more than a second statement.
        if done is not None:
            done.save(update_fields=RESULT_FIELDS)
        if starting:
            step_run.save(update_fields=START_FIELDS)
        _audit_pending(run, actor, progress)
    progress.unsaved = None
    progress.events = []
    if not alive:
        raise _Stopped


def _audit_pending(run: Run, actor: Actor, progress: _Progress) -> None:
    for action, metadata in progress.events:
        audit_record(
            tenant=run.tenant, action=action, actor=actor, target=f"run:{run.pk}", metadata=metadata
        )


NOT_RECORDED = "the request was sent to the provider; its answer was not recorded"
WORKER_LOST_DURING_CALL = (
    "the worker stopped during this call: the provider may have received the request "
    "(its dashboard shows it if so)"
)


def _finish(
    run: Run,
    actor: Actor,
    status: RunStatus,
    code: str,
    message: str,
    secrets: dict[str, ProviderSecret],
    progress: _Progress | None = None,
) -> None:
    """End the run, on a fresh connection if the one in use was lost (never left `running`).

    `progress` is what the executor holds unwritten (the step rows are read when not given).
    """
    if progress is None:
        progress = _with_db_retry(f"reading the steps of run {run.pk}", lambda: _progress(run))
    _with_db_retry(
        f"ending run {run.pk}",
        lambda: _finish_once(run, actor, status, code, message, secrets, progress),
    )


def _finish_once(
    run: Run,
    actor: Actor,
    status: RunStatus,
    code: str,
    message: str,
    secrets: dict[str, ProviderSecret],
    progress: _Progress,
) -> None:
    """One transaction: the last step's answer, the run's end, its steps' end, its events."""
    now = timezone.now()
    done = progress.unsaved
    with audited_atomic():
        if done is not None:
            done.save(update_fields=RESULT_FIELDS)
        # Only a run still running ends here: one the reaper failed keeps its recorded end.
        ended = Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=status, error_code=code, error_message=message, finished_at=now
        )
        if ended and status != RunStatus.SUCCEEDED:
            # A step still `running` had its request sent (its answer was lost with the
            # database connection, or the run failed while it was in flight): the provider may
            # have billed it. (A run that succeeded has every step recorded: nothing to do.)
            for step_run in progress.step_runs:
                if step_run.status == StepStatus.RUNNING:
                    step_run.status, step_run.error = StepStatus.FAILED, NOT_RECORDED
                    step_run.finished_at = now
                elif step_run.status == StepStatus.PENDING:
                    step_run.status = StepStatus.SKIPPED
            StepRun.objects.filter(run=run, status=StepStatus.RUNNING).update(
                status=StepStatus.FAILED, error=NOT_RECORDED, finished_at=now
            )
            StepRun.objects.filter(run=run, status=StepStatus.PENDING).update(
                status=StepStatus.SKIPPED
            )
        _audit_pending(run, actor, progress)  # key.consumed / key.leak_blocked, however it ends
        if ended:
            action = {
                RunStatus.SUCCEEDED: "run.succeeded",
                RunStatus.FAILED: "run.failed",
                RunStatus.CANCELLED: "run.cancelled",
            }[status]
            metadata: dict[str, Any] = {"keys_released": sorted(secrets)}
            if code:
                metadata["error_code"] = code
            # From the rows in hand: this worker is the only writer of its running run's steps.
            sent_to = _sent_to(progress.step_runs)
            if sent_to:
                metadata["sent_to"] = sent_to
            audit_record(
                tenant=run.tenant,
                action=action,
                actor=actor,
                target=f"run:{run.pk}",
                metadata=metadata,
            )
    progress.unsaved = None
    progress.events = []
    if ended:
        run.status, run.error_code, run.error_message = status, code, message
        run.finished_at = now
    else:
        run.refresh_from_db()  # the reaper ended it first: its end is the one to answer with


DESTINATION_FIELDS = ("destination_scheme", "destination_host", "destination_port")


def steps_sent_to(run: Run) -> list[dict[str, Any]]:
    """Where the run's steps sent requests: per provider and destination, how many (one query).

    `requests` counts each step's HTTP attempts; a step whose answer was never recorded (its
    request was in flight when the run ended) counts as one, since it may have been sent.
    """
    rows = (
        StepRun.objects.filter(run=run)
        .exclude(destination_host="")
        .values_list("provider", *DESTINATION_FIELDS, "attempts")
        .order_by("position")
    )
    return _sent_to_rows(rows)


def _sent_to(step_runs: list[StepRun]) -> list[dict[str, Any]]:
    """`steps_sent_to`, from step rows in hand (no query)."""
    return _sent_to_rows(
        (s.provider, s.destination_scheme, s.destination_host, s.destination_port, s.attempts)
        for s in step_runs
        if s.destination_host
    )


def _sent_to_rows(rows: Any) -> list[dict[str, Any]]:
    totals: dict[tuple[str, str], int] = {}
    for provider, scheme, host, port, attempts in rows:
        if port is None:
            continue
        origin = Destination(scheme, host, port).origin
        totals[(provider, origin)] = totals.get((provider, origin), 0) + max(attempts, 1)
    return [
        {"provider": provider, "destination": origin, "requests": requests}
        for (provider, origin), requests in sorted(totals.items())
    ]


def _audit(run: Run, action: str, actor: Actor, metadata: dict) -> None:
    _with_db_retry(
        f"auditing {action} for run {run.pk}",
        lambda: audit_record(
            tenant=run.tenant,
            action=action,
            actor=actor,
            target=f"run:{run.pk}",
            metadata=metadata,
        ),
    )


REQUEUE_BATCH = 500  # at most this many runs re-enqueued per sweep; the next sweep takes the rest


def runs_requeue(*, now: datetime | None = None) -> int:
    """Enqueue again each queued run that no worker claimed within RUN_REQUEUE_AFTER.

    Only runs whose keys are still valid: the others are the reaper's. A lost message, a claim
    that failed or a request that died after its commit would otherwise leave the run queued
    until its keys expired. If the run's first message is only late (a backlog), the second
    delivery finds the run claimed and does nothing.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RUN_REQUEUE_AFTER)
    unclaimed = Q(status=RunStatus.QUEUED, keys_expire_at__gt=now) & (
        Q(requeued_at__lt=cutoff) | Q(requeued_at=None, created_at__lt=cutoff)
    )
    actor = Actor.system("run sweeper")
    requeued = 0
    for run in (
        Run.objects.select_related("tenant")
        .filter(unclaimed)
        .order_by("created_at")[:REQUEUE_BATCH]
    ):
        try:
            with transaction.atomic():
                if not Run.objects.filter(unclaimed, pk=run.pk).update(
                    requeued_at=now, requeues=F("requeues") + 1
                ):
                    continue  # claimed, cancelled or swept meanwhile
                _audit(run, "run.requeued", actor, {"requeues": run.requeues + 1})
                # Inside the transaction: if the broker refuses, nothing is recorded and the
                # next sweep tries again. A worker that gets the message first waits for the
                # commit (its claim updates the same row).
                enqueue_run(run.pk)
        except Exception as exc:  # the broker is down: the next sweep takes over
            log.warning(
                "the sweep stopped: run %s could not be enqueued again (%s)",
                run.pk,
                type(exc).__name__,
            )
            break
        requeued += 1
    return requeued


def runs_reap(*, now: datetime | None = None) -> dict[str, int]:
    """Fail runs whose worker was lost and queued runs whose keys expired unclaimed; enqueue
    again the queued runs with valid keys that no worker claimed in time (`runs_requeue`)."""
    now = now or timezone.now()
    actor = Actor.system("run reaper")
    counts = {"interrupted": 0, "expired": 0}
    stale = now - timedelta(seconds=settings.RUN_INTERRUPTED_AFTER)
    for run in Run.objects.select_related("tenant").filter(
        status=RunStatus.RUNNING, heartbeat_at__lt=stale
    ):
        with transaction.atomic():
            if Run.objects.filter(
                pk=run.pk, status=RunStatus.RUNNING, heartbeat_at__lt=stale
            ).update(
                status=RunStatus.FAILED,
                error_code=RunError.INTERRUPTED,
                error_message="the worker stopped answering during the run",
                finished_at=now,
            ):
                # The step in flight may have reached the provider (and been billed).
                StepRun.objects.filter(run=run, status=StepStatus.RUNNING).update(
                    status=StepStatus.FAILED, error=WORKER_LOST_DURING_CALL, finished_at=now
                )
                StepRun.objects.filter(run=run, status=StepStatus.PENDING).update(
                    status=StepStatus.SKIPPED
                )
                ended: dict[str, Any] = {"error_code": RunError.INTERRUPTED}
                sent_to = steps_sent_to(run)
                if sent_to:
                    ended["sent_to"] = sent_to
                _audit(run, "run.failed", actor, ended)
                counts["interrupted"] += 1
    for run in Run.objects.select_related("tenant").filter(
        status=RunStatus.QUEUED, keys_expire_at__lt=now
    ):
        with transaction.atomic():
            if Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                status=RunStatus.FAILED,
                error_code=RunError.KEY_EXPIRED,
                error_message="no worker started the run before its keys expired",
                finished_at=now,
            ):
                StepRun.objects.filter(run=run).update(status=StepStatus.SKIPPED)
                for provider in run.providers:
                    _audit(
                        run,
                        "key.expired",
                        actor,
                        {
                            "provider": provider,
                            "fingerprint": run.key_fingerprints.get(provider, {}).get(
                                "fingerprint"
                            ),
                        },
                    )
                _audit(run, "run.failed", actor, {"error_code": RunError.KEY_EXPIRED})
                counts["expired"] += 1
    counts["requeued"] = runs_requeue(now=now)
    return counts
