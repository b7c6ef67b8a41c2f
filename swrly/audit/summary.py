"""One readable line per audit event, for the audit log page.

`summarize(action, metadata)` turns an event's action and metadata into a short sentence
("sandbox key sk-s…d00d taken by worker w1"). The metadata the registry declares never holds
a secret (keys appear only as provider, hint and fingerprint), and a summary names no more
than the metadata does; the webhook secret's prefix is left out all the same. An action
without a phrasing of its own (or metadata of an unexpected shape) gets its registry label,
or its metadata as `name: value` pairs, shortened.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from swrly.audit.events import UnknownAuditEvent, event_type
from swrly.keys.fingerprint import key_name
from swrly.templatetags.pages import format_duration

MAX_VALUE = 48  # characters of one value in a summary
MAX_SUMMARY = 140
_HIDDEN = frozenset({"secret_prefix", "signature", "head_hash"})  # never in the one-liner

Metadata = Mapping[str, Any]


def _short(value: Any, limit: int = MAX_VALUE) -> str:
    if isinstance(value, (list, tuple)):
        text = ", ".join(_short(item, limit) for item in value) or "none"
    elif isinstance(value, dict):
        text = ", ".join(f"{k} {_short(v, limit)}" for k, v in value.items()) or "none"
    elif value is None:
        text = "none"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fp(value: Any) -> str:
    text = str(value or "")
    return f"{text[:12]}…" if len(text) > 12 else text


def _key(md: Metadata) -> str:
    """ "anthropic key sk-a…7f3c (fp 3f9a0c1d)": the hint and the fingerprint's prefix
    (swrly.keys.fingerprint.key_name), either alone when the other is not recorded."""
    name = f"{md.get('provider') or 'provider'} key"
    named = key_name(str(md.get("hint") or ""), str(md.get("fingerprint") or ""))
    return f"{name} {named}" if named else name


def _worker(md: Metadata) -> str:
    return f" by worker {md['worker']}" if md.get("worker") else ""


def _duration(value: Any) -> str:
    return format_duration(timedelta(seconds=int(value)))


def _run_end(verb: str) -> Callable[[Metadata], str]:
    def summary(md: Metadata) -> str:
        parts = [verb]
        if md.get("error_code"):
            parts[0] += f": {md['error_code']}"
        if md.get("while"):
            parts[0] += f" while {md['while']}"
        if md.get("reason"):
            parts.append(f"reason {md['reason']}")
        if "keys_released" in md:
            parts.append(f"keys released: {_short(md['keys_released'])}")
        if md.get("sent_to"):
            parts.append(f"sent to {_short(md['sent_to'])}")
        return "; ".join(parts)

    return summary


def _discarded(md: Metadata) -> str:
    found = md.get("token_found")
    text = f"{_key(md)} discarded"
    if found is None and "token_found" in md:
        text += " (the key store did not answer)"
    elif found is False:
        text += " (already gone from the key store)"
    return text + (f": {md['reason']}" if md.get("reason") else "")


def _limits(md: Metadata) -> str:
    changes = []
    for name, change in md.items():
        if isinstance(change, Mapping):
            changes.append(f"{name} {change.get('from')} → {change.get('to')}")
        else:
            changes.append(f"{name} {_short(change)}")
    return "limits changed: " + "; ".join(changes)


_PHRASES: dict[str, Callable[[Metadata], str]] = {
    "key.deposited": lambda md: (
        f"{_key(md)} deposited"
        + (f", TTL {_duration(md['ttl'])}" if md.get("ttl") is not None else "")
    ),
    "key.consumed": lambda md: (
        f"{_key(md)} taken{_worker(md)}"
        + (f", may go to {md['destination']}" if md.get("destination") else "")
    ),
    "key.rewrapped": lambda md: (
        f"{md.get('provider') or 'provider'} stored key rewrapped from encryption key "
        f"{md.get('from_key_id')} to {md.get('to_key_id')} by rotation {_fp(md.get('rotation'))}"
    ),
    "key.discarded": _discarded,
    "key.expired": lambda md: f"{_key(md)} expired before a worker took it",
    "key.missing": lambda md: f"{_key(md)} missing when the worker looked{_worker(md)}",
    "key.rejected": lambda md: (
        f"{_key(md)} rejected{_worker(md)}" + (f": {md['reason']}" if md.get("reason") else "")
    ),
    "key.leak_blocked": lambda md: (
        f"a request of step {md.get('step')} to "
        f"{md.get('provider')} was refused: it carried another provider's key"
    ),
    "key.blocked": lambda md: f"run refused: {_key(md)} is on the blocklist",
    "blocked_key.added": lambda md: (
        f"{_key(md)} blocked" + (f": {_short(md['reason'])}" if md.get("reason") else "")
    ),
    "blocked_key.removed": lambda md: f"{_key(md)} removed from the blocklist",
    "run.created": lambda md: (
        f"run of workflow {_fp(md.get('workflow'))} created"
        + (f", keys for {_short(md['providers'])}" if md.get("providers") else "")
    ),
    "run.started": lambda md: f"run started{_worker(md)}",
    "run.succeeded": _run_end("succeeded"),
    "run.failed": _run_end("failed"),
    "run.cancelled": _run_end("cancelled"),
    "run.cancel_requested": lambda md: (
        "cancellation requested" + (f": {md['reason']}" if md.get("reason") else "")
    ),
    "run.requeued": lambda md: (
        f"enqueued again (time {md.get('requeues')}): no worker had taken it"
    ),
    "run.released": lambda md: (
        f"given back to the queue: {md.get('reason')}"
        + (f" ({md['provider']} key{_worker(md)})" if md.get("provider") else "")
    ),
    "member.added": lambda md: (
        f"added as {md.get('role')}" + (", new user" if md.get("user_created") else "")
    ),
    "member.role_changed": lambda md: f"role changed from {md.get('from')} to {md.get('to')}",
    # swrly/identity: invitations and MFA
    "invitation.created": lambda md: f"{_short(md.get('email'))} invited as {md.get('role')}",
    "invitation.accepted": lambda md: (
        f"{_short(md.get('email'))} accepted the invitation as {md.get('role')}"
        + (", new account" if md.get("user_created") else "")
    ),
    "invitation.revoked": lambda md: (
        f"invitation of {_short(md.get('email'))} revoked"
        + (f": {_short(md['reason'])}" if md.get("reason") else "")
    ),
    "mfa.enrolled": lambda md: (
        f"two-step verification turned on ({_short(md.get('method'))}), "
        f"{md.get('recovery_codes')} recovery codes"
    ),
    "mfa.recovery_code_used": lambda md: (
        f"signed in with a recovery code, {md.get('remaining')} left"
    ),
    "mfa.recovery_codes_regenerated": lambda md: (
        f"{md.get('recovery_codes')} new recovery codes; the old ones stopped working"
    ),
    "mfa.policy_changed": lambda md: (
        f"MFA required for {_short(md.get('to')) or 'no role'} "
        f"(was {_short(md.get('from')) or 'no role'})"
    ),
    "member.removed": lambda md: f"removed (was {md.get('role')})",
    "member.unlocked": lambda md: (
        "sign-in lockout lifted"
        + (f" for {_short(md['addresses'])}" if md.get("addresses") else "")
        + ("" if md.get("cleared") else " (nothing was locked)")
    ),
    "token.created": lambda md: (
        f"API token “{_short(md.get('name'))}” created"
        + (f", role {md['role']}" if md.get("role") else "")
        + (f", prefix {md['prefix']}" if md.get("prefix") else "")
    ),
    "token.revoked": lambda md: (
        f"API token “{_short(md.get('name'))}” revoked"
        + (f": {md['reason']}" if md.get("reason") else "")
    ),
    "tenant.limits_changed": _limits,
    "tenant.policy_changed": lambda md: "policy changed: " + ", ".join(sorted(md)),
    "run.content_purged": lambda md: (
        f"content of {md.get('runs')} runs ({md.get('steps')} steps) purged after "
        f"{md.get('retention_days')} days"
    ),
    "auth.login_failed": lambda md: (
        "sign-in failed" + (" for an unknown user" if md.get("known_user") is False else "")
    ),
    "auth.locked_out": lambda md: "sign-in locked out after repeated failures",
    "access.denied": lambda md: (
        f"access denied: {_short(md.get('reason'))}"
        + (f" ({_short(md['path'])})" if md.get("path") else "")
    ),
    "encryption_key.rotated": lambda md: (
        f"encryption key rotated {_short(md.get('from_key_ids'))}"
        f" → {md.get('to_key_id')}: {md.get('rewrapped')} stored key(s) rewrapped"
    ),
    "workflow.created": lambda md: (
        f"workflow “{_short(md.get('name'))}” created, "
        f"{md.get('steps')} step(s)"
        + (f" using {_short(md['providers'])}" if md.get("providers") else "")
    ),
    "workflow.updated": lambda md: f"workflow changed: {_short(md.get('fields'))}",
    "workflow.deleted": lambda md: f"workflow “{_short(md.get('name'))}” deleted",
    "audit.exported": lambda md: (
        f"audit log exported as {md.get('format')}"
        + (f" via {md['via']}" if md.get("via") else "")
        + (f", filters {_short(md['filters'])}" if md.get("filters") else "")
    ),
    "evidence.exported": lambda md: (
        f"evidence bundle {md.get('from')} to {md.get('to')}"
        + (f" via {md['via']}" if md.get("via") else "")
    ),
    "audit.suppressed": lambda md: (
        f"{md.get('suppressed')} of {md.get('attempts')} "
        f"{md.get('action')} events not recorded (flood bound)"
    ),
    "audit.checkpoint": lambda md: (
        f"checkpoint of events up to #{md.get('seq')} signed by key {md.get('key_id')}"
    ),
    "audit.webhook_created": lambda md: f"audit webhook to {_short(md.get('url'))} created",
    "audit.webhook_deleted": lambda md: (
        f"audit webhook to {_short(md.get('url'))} deleted"
        + (f", delivered up to #{md['delivered_seq']}" if md.get("delivered_seq") else "")
    ),
}


def _generic(action: str, md: Metadata) -> str:
    pairs = "; ".join(f"{k}: {_short(v)}" for k, v in md.items() if k not in _HIDDEN)
    try:
        label = event_type(action).label
    except UnknownAuditEvent:
        label = ""
    return ". ".join(part for part in (label, pairs) if part)


def summarize(action: str, metadata: Metadata | None) -> str:
    """One short line about an event, from its action and metadata (no secret, ever)."""
    md: Metadata = metadata if isinstance(metadata, Mapping) else {}
    phrase = _PHRASES.get(action)
    text = ""
    if phrase is not None:
        try:
            text = phrase(md)
        except (KeyError, TypeError, ValueError, AttributeError):
            text = ""
    if not text:
        text = _generic(action, md)
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"
