"""The audit event registry: every action the audit log records, declared once.

Each `EventType` names its action, what its target is (`run:<uuid>`, `user:<name>`, ...), the
metadata keys it may carry, who writes it and in which chain. The writer refuses an action
that is not declared here, or a metadata key its type does not list (a programming error). The
audit page's and the API's action filter, the run timeline's labels, the dashboard's key-event
series and the vocabulary table in docs/architecture.md all read this registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

TENANT = "the tenant"
USER_TENANTS = "each of the user's tenants"


class UnknownAuditEvent(ValueError):
    """An action that is not declared, or metadata its declaration does not list."""


@dataclass(frozen=True)
class EventType:
    action: str
    target: str  # what the event's target names, e.g. "run:<uuid>"
    metadata: tuple[str, ...]  # the keys its metadata may carry (each one optional)
    written_by: str
    chain: str = TENANT
    notes: str = ""  # how the metadata varies, for the docs
    label: str = ""  # a sentence for the run timeline
    key_life: bool = False  # a step in a provider key's life (per-key timeline, dashboard)

    @property
    def family(self) -> str:
        return self.action.split(".", 1)[0]

    @property
    def kind(self) -> str:
        return self.action.split(".", 1)[1]


_RUN = "run:<uuid>"
_KEY = ("provider", "fingerprint")

EVENT_TYPES: tuple[EventType, ...] = (
    EventType("tenant.created", "tenant:<slug>", (), "`tenant_create`"),
    EventType(
        "tenant.limits_changed",
        "tenant:<slug>",
        ("max_queued_runs", "max_running_runs"),
        "`tenant_limits_set` (`manage.py tenant-limits`)",
        notes="each `{from, to}`, only the limits changed; `null`: the platform default",
    ),
    EventType(
        "tenant.policy_changed",
        "tenant:<slug>",
        ("allowed_providers", "allowed_models", "max_key_ttl", "retention_days"),
        "`tenant_policy_update` (the settings page, `PATCH /api/v1/policy/`)",
        notes="each `{from, to}`, only the policies changed; `null`: the platform's (every "
        "enabled provider, `BYOK_TOKEN_TTL`) or, for `retention_days`, kept forever",
    ),
    EventType(
        "member.added",
        "user:<name>",
        ("role", "user_created", "invitation"),
        "`tenant_create`, `membership_add` (an accepted invitation)",
        notes="`user_created` and `invitation` (its id) when an invitation was accepted",
    ),
    EventType(
        "invitation.created",
        "invitation:<uuid>",
        ("email", "role", "expires_at"),
        "`invitation_create` (members page, `POST /api/v1/members/` or `/invitations/`)",
    ),
    EventType(
        "invitation.accepted",
        "invitation:<uuid>",
        ("email", "role", "user_created"),
        "`invitation_accept` (the invitation page), before its `member.added`",
        notes="`user_created`: the invitee chose a password for a new account",
    ),
    EventType(
        "invitation.revoked",
        "invitation:<uuid>",
        ("email", "role", "reason"),
        "`invitation_revoke`; `invitation_accept` when the inviter lost the authority",
        notes="`reason: inviter_authority_lost` when revoked at acceptance",
    ),
    EventType("member.role_changed", "user:<name>", ("from", "to"), "`membership_change_role`"),
    EventType("member.removed", "user:<name>", ("role",), "`membership_remove`"),
    EventType(
        "member.unlocked",
        "user:<name>",
        ("addresses", "cleared"),
        "`membership_unlock` (the members page, owners)",
        notes="`addresses`: those the lockout records named (at most 20); `cleared`: how many "
        "records were deleted (0: nothing was locked)",
    ),
    EventType(
        "token.created",
        "token:<uuid>",
        ("name", "role", "prefix", "via", "created_by_token"),
        "`api_token_create`",
        notes="`created_by_token` when created with another token",
    ),
    EventType(
        "token.revoked",
        "token:<uuid>",
        ("name", "prefix", "reason", "parent"),
        "`api_token_revoke` (once; revoking again writes nothing); a member's removal or "
        "demotion; a token presented without its authority",
        notes="`reason` unless revoked on request; `parent` with `reason: token.parent_revoked`",
    ),
    EventType(
        "auth.login",
        "user:<name>",
        (),
        "`user_logged_in` signal",
        chain="each of the user's tenants, else `platform`",
    ),
    EventType(
        "auth.login_failed",
        "user:<name>",
        ("known_user", "attempted_username"),
        "`user_login_failed` signal (within the flood bound)",
        chain="each tenant of the named user, else `platform`",
    ),
    EventType(
        "auth.locked_out",
        "user:<name>",
        ("attempted_username",),
        "axes `user_locked_out` signal (within the flood bound)",
        chain="each tenant of the named user, else `platform`",
    ),
    EventType("auth.logout", "user:<name>", (), "`user_logged_out` signal", chain=USER_TENANTS),
    EventType("auth.password_changed", "user:<name>", (), "the password page", chain=USER_TENANTS),
    EventType(
        "auth.mfa_failed",
        "user:<name>",
        (),
        "the sign-in's second step (within the flood bound; counts toward the lockout)",
        chain=USER_TENANTS,
    ),
    EventType(
        "mfa.enrolled",
        "user:<name>",
        ("method", "recovery_codes"),
        "`totp_enrolment_confirm` (the two-step verification page)",
        chain=USER_TENANTS,
    ),
    EventType(
        "mfa.recovery_code_used",
        "user:<name>",
        ("remaining",),
        "the sign-in's second step, with a recovery code",
        chain=USER_TENANTS,
    ),
    EventType(
        "mfa.recovery_codes_regenerated",
        "user:<name>",
        ("recovery_codes",),
        "`recovery_codes_regenerate` (the two-step verification page)",
        chain=USER_TENANTS,
    ),
    EventType(
        "mfa.policy_changed",
        "tenant:<slug>",
        ("from", "to"),
        "`mfa_policy_set` (MFA policy page, `PATCH /api/v1/mfa-policy/`)",
        notes="`from` and `to`: the roles that must use MFA",
    ),
    EventType(
        "access.denied",
        "what was asked for",
        ("reason", "path"),
        "`tenants/access.py` (within the flood bound): non-members, foreign or unknown ids, "
        "role refusals on pages and API, revoked tokens presented",
        chain="see the page flow above",
    ),
    EventType(
        "encryption_key.rotated",
        "rotation:<uuid>",
        ("from_key_ids", "to_key_id", "rewrapped"),
        "`key_rotation_finish` (`rotate-keys`)",
        chain="each tenant whose tokens it rewrapped",
    ),
    EventType(
        "workflow.created",
        "workflow:<uuid>",
        ("name", "steps", "providers"),
        "`workflow_create`",
        notes="`steps` is a count",
    ),
    EventType(
        "workflow.updated",
        "workflow:<uuid>",
        ("fields",),
        "`workflow_update`",
        notes="the names changed",
    ),
    EventType("workflow.deleted", "workflow:<uuid>", ("name",), "`workflow_delete`"),
    EventType(
        "run.created",
        _RUN,
        ("workflow", "providers"),
        "`run_create`",
        notes="`workflow` is an id",
        label="Run created",
    ),
    EventType(
        "key.deposited",
        _RUN,
        (*_KEY, "hint", "ttl", "encryption_key_id"),
        "`run_create`, one per provider",
        label="Deposited in the key store",
        key_life=True,
    ),
    EventType(
        "key.rewrapped",
        _RUN,
        ("provider", "from_key_id", "to_key_id", "rotation"),
        "`key_rotation_rewrapped` (`rotate-keys`), one per stored key whose swap applied, "
        "appended per batch",
        notes="`rotation`: the rotation's id; `from_key_id` and `to_key_id`: encryption key ids",
        label="Rewrapped by an encryption-key rotation",
        key_life=True,
    ),
    EventType("run.started", _RUN, ("worker",), "the executor's claim", label="Run started"),
    EventType(
        "key.consumed",
        _RUN,
        (*_KEY, "worker", "encryption_key_id", "destination"),
        "the executor, one per provider",
        notes="`destination`: the allow-listed `scheme://host:port` the key may be sent to",
        label="Taken by a worker",
        key_life=True,
    ),
    EventType(
        "key.discarded",
        _RUN,
        (*_KEY, "token_found", "reason"),
        "`run_cancel` (queued run); `run_fail_unqueued`, one per provider; the orphan sweep; "
        "the executor, when the tenant's policy refuses the run at its start",
        notes="`token_found` is `null` when the key store did not answer; `reason` (sweep; "
        "`key_blocked` when the run was cancelled because its key was blocked; "
        "`policy_refused` from the executor)",
        label="Discarded",
        key_life=True,
    ),
    EventType(
        "key.expired",
        _RUN,
        (*_KEY, "worker"),
        "the executor (token gone after `keys_expire_at`); the reaper (queued run past "
        "`keys_expire_at`)",
        notes="`worker` from the executor",
        label="Expired before a worker took it",
        key_life=True,
    ),
    EventType(
        "key.missing",
        _RUN,
        (*_KEY, "worker"),
        "the executor (token gone before `keys_expire_at`)",
        label="Missing when the worker looked",
        key_life=True,
    ),
    EventType(
        "key.rejected",
        _RUN,
        (*_KEY, "worker", "reason"),
        "the executor",
        notes="`reason`: `TokenAuthenticationFailed`, `UnknownKeyId` or `fingerprint mismatch`",
        label="Rejected",
        key_life=True,
    ),
    EventType(
        "key.leak_blocked",
        _RUN,
        ("provider", "step"),
        "the executor, when the provider wrapper refused a step's request because it carried "
        "another provider's live key (`key_leak_blocked`)",
        notes="`provider` is where the request was going; never the key",
        label="A request carrying another provider's key was refused",
    ),
    EventType(
        "key.blocked",
        "blocked_key:<uuid>",
        (*_KEY, "workflow"),
        "`run_create`, when a key given for a run is on the tenant's blocklist (no run is "
        "created, nothing is deposited)",
        notes="`fingerprint` is the blocklist entry's; `workflow` is an id",
    ),
    EventType(
        "blocked_key.added",
        "blocked_key:<uuid>",
        (*_KEY, "hint", "reason", "given"),
        "`blocked_key_add` (the key-history page, `POST /api/v1/blocked-keys/`)",
        notes='`given`: `"key"` (fingerprinted at once, never kept) or `"fingerprint"`; `hint` '
        "is empty for a fingerprint",
    ),
    EventType(
        "blocked_key.removed",
        "blocked_key:<uuid>",
        _KEY,
        "`blocked_key_remove` (the key-history page, `DELETE /api/v1/blocked-keys/{id}/`)",
    ),
    EventType(
        "run.succeeded",
        _RUN,
        ("keys_released", "error_code", "sent_to"),
        "the executor",
        notes="`keys_released`: providers whose keys the run held; `sent_to`: per provider and "
        "`scheme://host:port` destination, the `requests` the steps sent",
    ),
    EventType(
        "run.failed",
        _RUN,
        ("error_code", "keys_released", "sent_to"),
        "the executor; the reaper; `run_fail_unqueued`",
        notes="`keys_released` from the executor; `sent_to` (as `run.succeeded`) from the "
        "executor and the reaper",
    ),
    EventType(
        "run.cancelled",
        _RUN,
        ("while", "keys_released", "error_code", "sent_to", "reason"),
        "`run_cancel` (queued run); the executor (running run, before its next step)",
        notes='`while: "queued"` from `run_cancel`; `keys_released` and `sent_to` (as '
        '`run.succeeded`) from the executor; `reason: "key_blocked"` when a key the run holds '
        "was blocked",
    ),
    EventType(
        "run.cancel_requested",
        _RUN,
        ("reason",),
        "`run_cancel` (running run, first request only)",
        notes='`reason: "key_blocked"` when a key the run holds was blocked',
        label="Cancellation requested",
    ),
    EventType(
        "run.requeued",
        _RUN,
        ("requeues",),
        "the sweeper (`runs_requeue`: queued, keys valid, unclaimed for `RUN_REQUEUE_AFTER`)",
        notes="`requeues`: how many so far",
        label="Enqueued again: no worker had taken it",
    ),
    EventType(
        "run.released",
        _RUN,
        ("reason", "provider", "worker", "releases"),
        "the executor, when the key store did not answer the run's first `GETDEL` (no key "
        "taken): the run is queued again with its tokens and tried again later",
        notes='`reason: "key store unavailable"`; `provider`: whose token could not be read; '
        "`worker`: the worker that gave the claim back; `releases`: how many so far (at most "
        "`RUN_KEY_STORE_RETRIES`)",
        label="Given back to the queue: the key store did not answer",
    ),
    EventType(
        "run.content_purged",
        "tenant:<slug>",
        ("runs", "steps", "retention_days", "finished_before"),
        "`run_content_purge` (beat task `purge_run_content`, as `system:retention`), one per "
        "tenant and batch",
        notes="`runs`, `steps`: how many had their input, prompts, outputs and error texts "
        "purged; `finished_before`: the cutoff (runs that ended before it)",
    ),
    EventType(
        "audit.exported",
        "audit:<format>",
        ("format", "filters", "via"),
        "the audit export page and `GET /api/v1/audit-events/export/`",
        notes='`via: "api"` from the API',
    ),
    EventType(
        "evidence.exported",
        "evidence:<from>..<to>",
        ("from", "to", "via"),
        "the evidence bundle: the audit page's form, `GET /api/v1/evidence/`, "
        "`manage.py export-evidence` (as `system:export-evidence`)",
        notes="`via`: `page`, `api` or `cli`",
    ),
    EventType(
        "audit.suppressed",
        "action:<action>",
        (
            "action",
            "window_start",
            "window_seconds",
            "attempts",
            "recorded",
            "suppressed",
            "sources",
            "top_sources",
        ),
        "the flood bound, when a window has closed, as `system:audit-flood-bound`",
        chain="the chain the flood was in",
    ),
    EventType(
        "audit.checkpoint",
        "checkpoint:<seq>",
        ("seq", "head_hash", "created_at", "key_id", "signature"),
        "`audit_checkpoint_chain` (beat task, `manage.py audit-checkpoint`), as "
        "`system:audit-checkpoint`",
        chain="the chain's tenant (or `platform`)",
        notes="of the checkpoint",
    ),
    EventType(
        "audit.webhook_created",
        "webhook:<uuid>",
        ("url", "secret_prefix"),
        "`audit_webhook_create` (the audit webhooks page, `POST /api/v1/audit-webhooks/`)",
        notes="`url` without its query; never the secret",
    ),
    EventType(
        "audit.webhook_deleted",
        "webhook:<uuid>",
        ("url", "delivered_seq"),
        "`audit_webhook_delete` (the audit webhooks page, `DELETE /api/v1/audit-webhooks/<id>/`)",
        notes="`delivered_seq`: the last event the receiver acknowledged",
    ),
)

_REGISTRY: dict[str, EventType] = {}


def declare(event: EventType) -> EventType:
    """Add an event type to the registry (each action once)."""
    if event.action in _REGISTRY:
        raise ValueError(f"audit action {event.action!r} is declared twice")
    _REGISTRY[event.action] = event
    return event


def undeclare(action: str) -> None:
    """Remove an event type (for tests that declare their own)."""
    _REGISTRY.pop(action, None)


for _event in EVENT_TYPES:
    declare(_event)


def event_types() -> Iterator[EventType]:
    """The declared event types, in declaration order."""
    return iter(_REGISTRY.values())


def event_type(action: str) -> EventType:
    try:
        return _REGISTRY[action]
    except KeyError:
        raise UnknownAuditEvent(f"audit action {action!r} is not declared") from None


def check_event(action: str, metadata: Mapping[str, object] | None) -> EventType:
    """The action's type; UnknownAuditEvent when it, or a metadata key, is not declared."""
    declared = event_type(action)
    unknown = sorted(set(metadata or {}) - set(declared.metadata))
    if unknown:
        raise UnknownAuditEvent(
            f"audit action {action!r} declares no metadata {', '.join(map(repr, unknown))}"
        )
    return declared


def action_filter_choices() -> list[str]:
    """What the action filters offer: per family, `family.*` when it has several, then each."""
    choices: list[str] = []
    families: dict[str, list[str]] = {}
    for event in EVENT_TYPES:
        families.setdefault(event.family, []).append(event.action)
    for family, actions in families.items():
        if len(actions) > 1:
            choices.append(f"{family}.*")
        choices.extend(actions)
    return choices


def key_life_events() -> list[EventType]:
    """The steps of a provider key's life, in order."""
    return [event for event in EVENT_TYPES if event.key_life]


def _codes(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def vocabulary_table() -> str:
    """The Markdown table of every action, as docs/architecture.md shows it."""
    lines = [
        "| Action | Written by | Chain | Target | Metadata |",
        "|---|---|---|---|---|",
    ]
    for event in EVENT_TYPES:
        metadata = _codes(event.metadata) or "none"
        if event.notes:
            metadata += f" ({event.notes})"
        lines.append(
            f"| `{event.action}` | {event.written_by} | {event.chain} | `{event.target}` "
            f"| {metadata} |"
        )
    return "\n".join(lines) + "\n"
