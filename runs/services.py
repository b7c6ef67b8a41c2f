"""Writes to workflows and runs, each with its audit event in the same transaction."""

import hashlib
import hmac
import json
import logging
import uuid
from datetime import timedelta
from functools import partial
from typing import Any, NoReturn

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from runs.fairness import admit_run
from runs.models import IdempotencyKey, Run, RunError, RunStatus, StepRun, StepStatus, Workflow
from runs.providers.egress import EgressRefused, provider_base_url
from runs.queue import enqueue_run
from runs.tokens import discard_token_best_effort
from runs.workflow_spec import (
    SpecError,
    check_policy,
    policy_problems,
    validate_input,
    validate_steps,
)
from swrly import keys
from swrly.audit.writer import Actor, audit_record, audit_under_lock, audited_atomic
from swrly.custody.models import BlockedKey
from swrly.custody.selectors import blocked_key_for
from swrly.custody.services import fingerprint_salt, provider_key_seen
from swrly.keys.fingerprint import Fingerprint, legacy_fingerprint, tenant_fingerprint
from swrly.keys.redaction import secret_in
from swrly.keys.rotation import idle_live_tokens
from swrly.keys.secret import ProviderSecret
from swrly.providers import BASE_URL_SETTING, PROVIDER_NAMES
from tenants.models import Tenant
from tenants.policy import key_ttl, provider_policy

log = logging.getLogger(__name__)


@transaction.atomic
def workflow_create(
    *,
    tenant: Tenant,
    name: str,
    description: str = "",
    steps: Any,
    actor: Actor,
    request: HttpRequest | None = None,
) -> Workflow:
    """A new workflow; SpecError when a step is wrong or the tenant's policy refuses its
    provider or model (naming the step and the field)."""
    steps = validate_steps(steps)
    check_policy(steps, provider_policy(tenant))
    workflow = Workflow.objects.create(
        tenant=tenant,
        name=name,
        description=description,
        steps=steps,
        created_by=actor.label,
        updated_by=actor.label,
    )
    audit_record(
        tenant=tenant,
        action="workflow.created",
        actor=actor,
        target=f"workflow:{workflow.pk}",
        metadata={"name": name, "steps": len(workflow.steps), "providers": workflow.providers},
        request=request,
    )
    return workflow


@transaction.atomic
def workflow_update(
    *, workflow: Workflow, changes: dict, actor: Actor, request: HttpRequest | None = None
) -> Workflow:
    """Change a workflow's name, description or steps. Runs keep the steps they started with.

    New steps are checked against the tenant's provider policy (SpecError naming the step and
    the field); a change that leaves the steps alone is not."""
    if "steps" in changes:
        changes = {**changes, "steps": validate_steps(changes["steps"])}
        check_policy(changes["steps"], provider_policy(workflow.tenant))
    for field, value in changes.items():
        setattr(workflow, field, value)
    workflow.updated_by = actor.label
    workflow.save()
    audit_record(
        tenant=workflow.tenant,
        action="workflow.updated",
        actor=actor,
        target=f"workflow:{workflow.pk}",
        metadata={"fields": sorted(changes)},
        request=request,
    )
    return workflow


@transaction.atomic
def workflow_delete(
    *, workflow: Workflow, actor: Actor, request: HttpRequest | None = None
) -> None:
    """Delete a workflow; its runs stay, with the steps they ran.

    Locks in the order every writer of a workflow uses (the workflow row, its runs, then the
    tenant's audit chain head): auditing first deadlocked on PostgreSQL against a concurrent
    workflow_update, which holds the workflow row when it audits.
    """
    pk, name = workflow.pk, workflow.name
    Workflow.objects.select_for_update(of=("self",)).filter(pk=pk).first()
    workflow.delete()
    audit_record(
        tenant=workflow.tenant,
        action="workflow.deleted",
        actor=actor,
        target=f"workflow:{pk}",
        metadata={"name": name},
        request=request,
    )


def _check_provider_keys(workflow: Workflow, provider_keys: dict[str, ProviderSecret]) -> None:
    errors: dict[str, list[str]] = {}
    needed = set(workflow.providers)
    for provider in sorted(needed):
        try:
            provider_base_url(provider)
        except EgressRefused:
            errors[f"provider_keys.{provider}"] = [
                f"{provider} is not enabled on this platform ({BASE_URL_SETTING})"
            ]
    if errors:  # no key is taken for a run that could not reach its provider
        raise SpecError(errors)
    for provider in sorted(set(provider_keys) - needed):
        errors[f"provider_keys.{provider}"] = [
            f"unknown provider (known: {', '.join(PROVIDER_NAMES)})"
            if provider not in PROVIDER_NAMES
            else f"this workflow does not use {provider}; send only the keys it needs"
        ]
    for provider in sorted(needed - set(provider_keys)):
        errors[f"provider_keys.{provider}"] = [
            f"this workflow uses {provider}: its key is required"
        ]
    for provider, secret in sorted(provider_keys.items()):
        if provider in needed:
            try:
                keys.store.validate_key(provider=provider, key=secret.reveal())
            except keys.InvalidKey as exc:
                errors[f"provider_keys.{provider}"] = [f"the key {exc.rule}"]
    if errors:
        raise SpecError(errors)


def _check_policy_allows(tenant: Tenant, workflow: Workflow) -> None:
    """SpecError under `workflow` when the tenant's policy refuses one of its steps' providers
    or models (it may have been narrowed after the workflow was saved): nothing is deposited."""
    problems = policy_problems(workflow.steps, provider_policy(tenant))
    if problems:
        raise SpecError(
            {"workflow": [f"{where}: {' '.join(messages)}" for where, messages in problems.items()]}
        )


def _check_input_holds_no_key(run_input: Any, provider_keys: dict[str, ProviderSecret]) -> None:
    """SpecError when the input carries one of the run's keys (in any encoding): the input is
    stored and rendered into prompts, where a key must never go."""
    try:
        text = json.dumps(run_input, default=str)
    except (ValueError, TypeError, RecursionError):  # not storable: refused elsewhere
        return
    for provider, secret in sorted(provider_keys.items()):
        if secret_in(text, secret=secret):
            raise SpecError(
                {"input": [f"contains the {provider} key; keys go only in provider_keys"]}
            )


class IdempotencyConflict(ValidationError):
    """An Idempotency-Key already used for a different request."""


class IdempotencyRace(Exception):
    """A concurrent request with the same Idempotency-Key recorded it first: its run is the
    answer (`run_for_idempotency_key`), and this request created nothing."""


def run_request_hash(
    *, workflow: Workflow, run_input: Any, provider_keys: dict[str, ProviderSecret]
) -> str:
    """What makes two run requests the same: workflow, input, and the keys' fingerprints.

    The legacy (v1) fingerprints: a request hash recorded before the per-tenant fingerprints
    must still match its retry.
    """
    prints = {
        provider: legacy_fingerprint(provider=provider, key=secret.reveal()).value
        for provider, secret in provider_keys.items()
    }
    body = json.dumps(
        {"workflow": str(workflow.pk), "input": run_input, "keys": prints},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def run_for_idempotency_key(*, tenant: Tenant, key: str, request_hash: str) -> Run | None:
    """The run an earlier request with this Idempotency-Key made, or None.

    IdempotencyConflict when the key was used for a different request.
    """
    found = (
        IdempotencyKey.objects.select_related("run")
        .filter(tenant=tenant, key=key, created_at__gte=timezone.now() - IDEMPOTENCY_WINDOW)
        .first()
    )
    if found is None:
        return None
    if not hmac.compare_digest(found.request_hash, request_hash):
        raise IdempotencyConflict("this Idempotency-Key was used for a different request")
    return found.run


IDEMPOTENCY_WINDOW = timedelta(hours=24)


class KeyBlocked(Exception):
    """A key the run was given is on the tenant's blocklist: nothing was deposited."""

    def __init__(self, *, provider: str, blocked_at: Any) -> None:
        super().__init__(
            f"the {provider} key is blocked: it was registered as compromised on "
            f"{blocked_at:%Y-%m-%d %H:%M} UTC; use another key"
        )
        self.provider = provider


def _fingerprint_keys(
    tenant: Tenant, provider_keys: dict[str, ProviderSecret], needed: list[str]
) -> tuple[dict[str, Fingerprint], dict[str, set[str]]]:
    """Each needed key's v2 fingerprint, and every fingerprint (v2, v1) a blocklist entry may
    name it by."""
    prints: dict[str, Fingerprint] = {}
    names: dict[str, set[str]] = {}
    salt = fingerprint_salt(tenant=tenant) if needed else b""
    for provider in needed:
        key = provider_keys[provider].reveal()
        current = tenant_fingerprint(provider=provider, key=key, salt=salt)
        prints[provider] = current
        names[provider] = {current.value, legacy_fingerprint(provider=provider, key=key).value}
        del key
    return prints, names


def _refuse_blocked(
    *,
    tenant: Tenant,
    blocked: BlockedKey,
    workflow: Workflow,
    actor: Actor,
    request: HttpRequest | None,
) -> NoReturn:
    """Audit `key.blocked` (in a transaction of its own: it outlives the refusal) and raise
    KeyBlocked."""
    with transaction.atomic():
        audit_record(
            tenant=tenant,
            action="key.blocked",
            actor=actor,
            target=f"blocked_key:{blocked.pk}",
            metadata={
                "provider": blocked.provider,
                "fingerprint": blocked.fingerprint,
                "workflow": str(workflow.pk),
            },
            request=request,
        )
    raise KeyBlocked(provider=blocked.provider, blocked_at=blocked.created_at)


class _BlockedMeanwhile(Exception):
    """A key was blocked while the run was being created (seen under the audit-chain lock)."""

    def __init__(self, blocked: BlockedKey) -> None:
        super().__init__()
        self.blocked = blocked


def run_create(
    *,
    tenant: Tenant,
    workflow: Workflow,
    run_input: Any,
    provider_keys: dict[str, ProviderSecret],
    actor: Actor,
    request: HttpRequest | None = None,
    idempotency: tuple[str, str] | None = None,
) -> Run:
    """Create a queued run and deposit its keys; the worker is asked once the run is committed.

    SpecError for a provider or model the tenant's policy refuses (under `workflow`, naming the
    step and field), for a missing, unknown, unneeded or malformed key, an input that carries one of
    the keys (in any encoding), or an input the templates can't use; KeyBlocked (audited
    `key.blocked`) for a key on the tenant's blocklist, checked before anything is deposited
    and again under the audit-chain lock, which `blocked_key_add` also takes: a key blocked
    while this run is created is either seen here or finds this run committed and cancels it;
    KeyStoreUnavailable when Redis fails, in which case no run is left behind and its tokens
    are discarded (or, if Redis does not answer the DEL either, deleted later by
    `orphan_tokens_sweep`); QueueFull when the tenant already has its limit of runs queued
    (runs.fairness): checked before anything is deposited and counted again under the
    audit-chain lock, so concurrent requests never both take the last place (the loser's tokens
    are discarded with its transaction). `idempotency` is
    (Idempotency-Key, request hash): recorded before any key is deposited, so a concurrent
    duplicate fails with IdempotencyRace before it deposits anything. The key-store calls come
    before the audit chain is locked, so a slow Redis never holds the tenant's audit-chain lock;
    once the run is committed, nothing on this path discards its tokens (they belong to the
    run, which a worker or the reaper ends).
    """
    _check_policy_allows(tenant, workflow)
    _check_provider_keys(workflow, provider_keys)
    _check_input_holds_no_key(run_input, provider_keys)
    validate_input(workflow.steps, run_input)
    try:
        return _run_create(
            tenant=tenant,
            workflow=workflow,
            run_input=run_input,
            provider_keys=provider_keys,
            actor=actor,
            request=request,
            idempotency=idempotency,
        )
    except _BlockedMeanwhile as exc:
        # Rolled back (its tokens discarded, if any were deposited); audited on its own.
        _refuse_blocked(
            tenant=tenant, blocked=exc.blocked, workflow=workflow, actor=actor, request=request
        )


@sensitive_variables("request_hash", "idempotency")
def run_trigger(
    *,
    tenant: Tenant,
    workflow: Workflow,
    run_input: Any,
    provider_keys: dict[str, ProviderSecret],
    actor: Actor,
    request: HttpRequest | None = None,
    idempotency_key: str | None = None,
) -> tuple[Run, bool]:
    """A run request as a client makes it (the API's POST /api/v1/runs/, the run page's form):
    `run_create`, or, for an `idempotency_key` already used with the same request, the run it
    made. Returns (run, replayed).

    A replay deposits nothing again; a concurrent request with the same key that wins the race
    is answered with its run (IdempotencyRace is never raised to the caller). The same key with
    a different request is IdempotencyConflict. Every error of `run_create` passes through.
    """
    idempotency = None
    if idempotency_key is not None:
        request_hash = run_request_hash(
            workflow=workflow, run_input=run_input, provider_keys=provider_keys
        )
        idempotency = (idempotency_key, request_hash)
        earlier = run_for_idempotency_key(
            tenant=tenant, key=idempotency_key, request_hash=request_hash
        )
        if earlier is not None:
            return earlier, True
    try:
        run = run_create(
            tenant=tenant,
            workflow=workflow,
            run_input=run_input,
            provider_keys=provider_keys,
            actor=actor,
            request=request,
            idempotency=idempotency,
        )
    except IdempotencyRace:
        if idempotency is None:  # only a create with an idempotency key races
            raise
        # A concurrent request with the same key won; answer with its run.
        winner = run_for_idempotency_key(
            tenant=tenant, key=idempotency[0], request_hash=idempotency[1]
        )
        if winner is None:  # recorded, then past the window: cannot happen within a request
            raise
        return winner, True
    return run, False


def _run_create(
    *,
    tenant: Tenant,
    workflow: Workflow,
    run_input: Any,
    provider_keys: dict[str, ProviderSecret],
    actor: Actor,
    request: HttpRequest | None,
    idempotency: tuple[str, str] | None,
) -> Run:
    """One transaction, one commit: the blocklist checked, the idempotency key recorded, the
    keys deposited, the run inserted with their fingerprints, and the audit events appended
    together at the end (`audited_atomic`), the blocklist checked again under the chain lock."""
    run_id = uuid.uuid4()  # known before anything is written, so a cleanup can name its tokens
    committed = False
    depositing = False  # nothing to clean up in the key store before the first deposit

    def mark_committed() -> None:
        nonlocal committed
        committed = True

    def not_blocked_meanwhile() -> None:
        # Under the audit-chain lock, which blocked_key_add's audit event also takes: an entry
        # committed before we got the lock is seen here; one committed after finds this run.
        blocked = blocked_key_for(tenant=tenant, fingerprints=names)
        if blocked is not None:
            raise _BlockedMeanwhile(blocked)

    try:
        with audited_atomic():
            admit_run(tenant, including_new=False)  # a full queue: refused before any deposit
            prints, names = _fingerprint_keys(tenant, provider_keys, workflow.providers)
            blocked = blocked_key_for(tenant=tenant, fingerprints=names)
            if blocked is not None:  # before anything is deposited
                raise _BlockedMeanwhile(blocked)
            audit_under_lock(not_blocked_meanwhile)  # first of the work under the chain head
            # The tenant's queued runs counted again, this one included, after every concurrent
            # creation of the tenant that locked the head first has committed.
            audit_under_lock(partial(admit_run, tenant, including_new=True))
            if idempotency is not None:
                IdempotencyKey.objects.filter(
                    tenant=tenant,
                    key=idempotency[0],
                    created_at__lt=timezone.now() - IDEMPOTENCY_WINDOW,
                ).delete()
                # The run row follows in this transaction (the foreign key is checked at commit).
                _idempotency_key_record(tenant=tenant, idempotency=idempotency, run_id=run_id)
            deposited = []
            depositing = True
            for provider in workflow.providers:
                plaintext = provider_keys[provider].reveal()
                receipt = keys.deposit(
                    tenant_id=tenant.pk,
                    run_id=run_id,
                    provider=provider,
                    key=plaintext,
                    ttl=key_ttl(tenant),  # min(BYOK_TOKEN_TTL, the tenant's own)
                )
                deposited.append((provider, receipt, prints[provider]))
                del plaintext
            run = _run_insert(
                run_id,
                tenant,
                workflow,
                run_input,
                actor,
                key_fingerprints={
                    provider: {"fingerprint": print_.value, "hint": print_.hint}
                    for provider, _, print_ in deposited
                },
                keys_expire_at=deposited[-1][1].expires_at if deposited else None,
            )
            audit_record(
                tenant=tenant,
                action="run.created",
                actor=actor,
                target=f"run:{run.pk}",
                metadata={"workflow": str(workflow.pk), "providers": run.providers},
                request=request,
            )
            for provider, receipt, print_ in deposited:
                # Counted under the chain head, after the blocklist re-check: every run of the
                # same key updates this one row, so its lock is held only for the last
                # statements before the commit (not from the deposit on). Nothing else writes
                # ProviderKey rows, so the head → key row order is the only one there is.
                audit_under_lock(
                    partial(
                        provider_key_seen,
                        tenant=tenant,
                        provider=provider,
                        fingerprint=print_.value,
                        hint=print_.hint,
                    )
                )
                audit_record(
                    tenant=tenant,
                    action="key.deposited",
                    actor=actor,
                    target=f"run:{run.pk}",
                    metadata={
                        "provider": provider,
                        "fingerprint": print_.value,
                        "hint": print_.hint,
                        "ttl": receipt.ttl,
                        "encryption_key_id": receipt.key_id_hex,
                    },
                    request=request,
                )
            # In this order: the run counts as committed before the broker is asked.
            transaction.on_commit(mark_committed)
            transaction.on_commit(lambda: _enqueue(run))
    except BaseException:
        if not committed and depositing:
            # The run does not exist: neither may its tokens. Every provider, not only those
            # that answered: a deposit that timed out may have been stored all the same.
            for provider in workflow.providers:
                discard_token_best_effort(tenant.pk, run_id, provider)
        raise
    return run


def _idempotency_key_record(
    *, tenant: Tenant, idempotency: tuple[str, str], run_id: uuid.UUID
) -> None:
    """Record the run's Idempotency-Key; IdempotencyRace when a concurrent request holds it.

    Only a violation of the key's unique constraint is that race: the insert runs in a
    savepoint, and an IntegrityError is a race only when the key is then found recorded (under
    READ COMMITTED the competing insert has committed by the time ours fails). Any other
    IntegrityError is raised as it is.
    """
    key, request_hash = idempotency
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(
                tenant=tenant, key=key, request_hash=request_hash, run_id=run_id
            )
    except IntegrityError:
        if not IdempotencyKey.objects.filter(tenant=tenant, key=key).exists():
            raise
        raise IdempotencyRace(key) from None


ORPHAN_TOKEN_IDLE = 120  # seconds: far beyond any request's deadline (gunicorn's is 30 s)


def orphan_tokens_sweep(*, min_idle: int = ORPHAN_TOKEN_IDLE) -> int:
    """Delete tokens no worker will ever take, and audit each. Returns how many were deleted.

    A token is an orphan when its run does not exist (a request that died, or whose cleanup
    DEL timed out while Redis applied its SET later) or is no longer queued (a token a Redis
    failover brought back after the worker took it). Tokens of queued runs are left for their
    worker; tokens written or read in the last `min_idle` seconds are left alone, so a deposit
    whose run is not committed yet is never touched. Runs every minute (beat).
    """
    candidates = list(idle_live_tokens(min_idle=min_idle))
    if not candidates:
        return 0
    runs = Run.objects.select_related("tenant").in_bulk({run for _, run, _ in candidates})
    tenants = Tenant.objects.in_bulk({tenant for tenant, _, _ in candidates})
    actor = Actor.system("token sweeper")
    deleted = 0
    for tenant_id, run_id, provider in candidates:
        run = runs.get(uuid.UUID(run_id))
        if run is not None and str(run.tenant_id) == tenant_id:
            if run.status == RunStatus.QUEUED and run.keys_consumed_at is None:
                continue
            reason = f"the run is {run.status}: the token came back after it was taken"
        else:
            reason = "no such run: the request that deposited it did not complete"
        found = discard_token_best_effort(tenant_id, run_id, provider)
        if not found:
            continue
        deleted += 1
        tenant = tenants.get(uuid.UUID(tenant_id))
        if tenant is None:
            log.warning("deleted an orphan %s token of a tenant that no longer exists", provider)
            continue
        audit_record(
            tenant=tenant,
            action="key.discarded",
            actor=actor,
            target=f"run:{run_id}",
            metadata={
                "provider": provider,
                "fingerprint": run.key_fingerprints.get(provider, {}).get("fingerprint")
                if run is not None
                else None,
                "token_found": True,
                "reason": reason,
            },
        )
    return deleted


def _run_insert(
    run_id: uuid.UUID,
    tenant: Tenant,
    workflow: Workflow,
    run_input: dict,
    actor: Actor,
    *,
    key_fingerprints: dict[str, dict[str, str]],
    keys_expire_at: Any,
) -> Run:
    run = Run.objects.create(
        id=run_id,
        tenant=tenant,
        workflow=workflow,
        workflow_name=workflow.name,
        steps=workflow.steps,
        input=run_input,
        triggered_by=actor.label,
        key_fingerprints=key_fingerprints,
        keys_expire_at=keys_expire_at,
    )
    step_runs = StepRun.objects.bulk_create(
        StepRun(
            tenant=tenant,
            run=run,
            position=index,
            name=step["name"],
            provider=step["provider"],
            model=step["model"],
        )
        for index, step in enumerate(run.steps)
    )
    # The answer to the request is made from the rows in hand: after the commit, nothing on the
    # request's path needs the database (a connection lost then cannot turn into a 500).
    cached = run.step_runs.all()
    # Django's prefetch cache, filled by hand; its private attributes have no stubs.
    cached._result_cache = step_runs
    cached._prefetch_done = True  # type: ignore[attr-defined]
    run._prefetched_objects_cache = {"step_runs": cached}  # type: ignore[attr-defined]
    return run


def _enqueue(run: Run) -> None:
    """Hand the committed run to a worker; if the broker refuses, end the run at once.

    Never raises: it runs after the commit, when the request must answer with its run.
    """
    try:
        enqueue_run(run.pk)
    except Exception:
        log.exception("could not queue run %s; failing it and discarding its keys", run.pk)
        try:
            run_fail_unqueued(run=run)
        except Exception:
            # The database is gone too: the run stays queued, and the sweeper hands it to a
            # worker (or the reaper ends it when its keys expire). The request still answers.
            log.exception("could not fail unqueued run %s; the sweeper will retry it", run.pk)


def run_fail_unqueued(*, run: Run) -> None:
    """Fail a queued run no worker will ever see, and discard its tokens."""
    actor = Actor.system("run queue")
    with transaction.atomic():
        if not Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.FAILED,
            error_code=RunError.QUEUE_UNAVAILABLE,
            error_message="the run could not be handed to a worker; trigger it again",
            finished_at=timezone.now(),
        ):
            return
        StepRun.objects.filter(run=run).update(status=StepStatus.SKIPPED)
        for provider in run.providers:
            _audit_discard(
                run, provider, actor, discard_token_best_effort(run.tenant_id, run.pk, provider)
            )
        audit_record(
            tenant=run.tenant,
            action="run.failed",
            actor=actor,
            target=f"run:{run.pk}",
            metadata={"error_code": RunError.QUEUE_UNAVAILABLE},
        )


class RunFinished(ValidationError):
    """The run has already ended."""


def _audit_discard(
    run: Run,
    provider: str,
    actor: Actor,
    found: bool | None,
    request: HttpRequest | None = None,
    reason: str | None = None,
) -> None:
    audit_record(
        tenant=run.tenant,
        action="key.discarded",
        actor=actor,
        target=f"run:{run.pk}",
        metadata={
            "provider": provider,
            "fingerprint": run.key_fingerprints.get(provider, {}).get("fingerprint"),
            # None: the key store did not answer; the token expires at its TTL, unused (the
            # run can no longer be claimed).
            "token_found": found,
            **({"reason": reason} if reason else {}),
        },
        request=request,
    )


def run_cancel(
    *, run: Run, actor: Actor, request: HttpRequest | None = None, reason: str | None = None
) -> Run:
    """Cancel a run: a queued one at once (its tokens are discarded), a running one before its
    next step. RunFinished when it has already ended. `reason` (e.g. `key_blocked`) goes into
    the audit events when the cancellation is not the caller's own request."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.CANCELLED, cancel_requested_at=now, finished_at=now
        )
        if cancelled:
            StepRun.objects.filter(run=run).update(status=StepStatus.SKIPPED)
            audit_record(
                tenant=run.tenant,
                action="run.cancelled",
                actor=actor,
                target=f"run:{run.pk}",
                metadata={"while": "queued", **({"reason": reason} if reason else {})},
                request=request,
            )
            requested = 0
        else:
            requested = Run.objects.filter(
                pk=run.pk, status=RunStatus.RUNNING, cancel_requested_at=None
            ).update(cancel_requested_at=now)
            if requested:
                audit_record(
                    tenant=run.tenant,
                    action="run.cancel_requested",
                    actor=actor,
                    target=f"run:{run.pk}",
                    metadata={"reason": reason} if reason else {},
                    request=request,
                )
    if cancelled:  # committed: no worker can claim the run, so its tokens can only be deleted
        for provider in run.providers:
            with transaction.atomic():
                _audit_discard(
                    run,
                    provider,
                    actor,
                    discard_token_best_effort(run.tenant_id, run.pk, provider),
                    request,
                    reason,
                )
    run.refresh_from_db()
    if not cancelled and not requested and run.is_finished:
        raise RunFinished(f"the run has already ended ({run.status})")
    return run


def runs_cancel_holding_key(
    *,
    tenant: Tenant,
    provider: str,
    fingerprints: set[str],
    actor: Actor,
    request: HttpRequest | None = None,
) -> int:
    """Cancel the tenant's queued and running runs that hold a key just blocked (any of its
    `fingerprints`): queued ones at once, their tokens discarded; running ones before their
    next step. Registered with custody (runs.apps), which calls it from `blocked_key_add`.
    Returns how many runs it cancelled or asked to stop."""
    holding = Q()
    for value in sorted(fingerprints):
        holding |= Q(**{f"key_fingerprints__{provider}__fingerprint": value})
    runs = (
        Run.objects.filter(tenant=tenant, status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
        .filter(holding)
        .select_related("tenant")
        .order_by("created_at")
    )
    count = 0
    for run in runs:
        try:
            run_cancel(run=run, actor=actor, request=request, reason="key_blocked")
        except RunFinished:  # ended meanwhile
            continue
        count += 1
    return count
