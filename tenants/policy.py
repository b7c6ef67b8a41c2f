"""A tenant's policies: which providers and models its workflows may use, how long its runs'
stored keys live, and how long run content is kept.

Every policy narrows the platform and never widens it: the providers are a subset of those the
operator enables (PROVIDER_BASE_URLS), the key TTL is at most BYOK_TOKEN_TTL. The checks here
are the one home of these rules: the policy service validates a change with them, and the run
engine (runs.workflow_spec.policy_problems, runs.services, runs.executor) enforces them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest

from swrly.audit.writer import Actor, audit_record
from swrly.providers import BASE_URL_SETTING, PROVIDER_NAMES
from tenants.models import Tenant

MAX_MODEL_PATTERNS = 50  # per provider
MODEL_PATTERN_MAX_LENGTH = 200  # a step's model name is at most 200 characters too
RETENTION_MAX_DAYS = 3650


def platform_providers() -> tuple[str, ...]:
    """The providers the operator enables (a base URL in PROVIDER_BASE_URLS), registry order."""
    urls = getattr(settings, BASE_URL_SETTING)
    return tuple(name for name in PROVIDER_NAMES if urls.get(name))


def model_allowed(model: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether `model` is one of `patterns`: an exact name, or a prefix ending in `*`."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if model.startswith(pattern[:-1]):
                return True
        elif model == pattern:
            return True
    return False


@dataclass(frozen=True)
class ProviderPolicy:
    """Which providers, and which models of each, a tenant's workflows may use."""

    providers: frozenset[str] | None = None  # None: every provider the platform enables
    models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def restricts(self) -> bool:
        return self.providers is not None or bool(self.models)

    def provider_problem(self, provider: str) -> str | None:
        """Why a step may not use `provider`, or None when it may."""
        if self.providers is None or provider in self.providers:
            return None
        allowed = ", ".join(p for p in PROVIDER_NAMES if p in self.providers)
        return f"{provider} is not allowed by this tenant's policy " + (
            f"(allowed: {allowed})" if allowed else "(no provider is allowed)"
        )

    def model_problem(self, provider: str, model: str) -> str | None:
        """Why a step of `provider` may not use `model`, or None when it may."""
        patterns = self.models.get(provider)
        if patterns is None or model_allowed(model, patterns):
            return None
        return (
            f"{model} is not an allowed {provider} model in this tenant's policy "
            f"(allowed: {', '.join(patterns)})"
        )


def provider_policy(tenant: Any) -> ProviderPolicy:
    """The tenant's provider and model policy, from its row as loaded."""
    providers = tenant.allowed_providers
    return ProviderPolicy(
        providers=frozenset(providers) if providers is not None else None,
        models={p: tuple(m) for p, m in (tenant.allowed_models or {}).items()},
    )


def key_ttl(tenant: Any) -> int:
    """Seconds a run's stored keys live: min(the platform's BYOK_TOKEN_TTL, the tenant's)."""
    platform = int(settings.BYOK_TOKEN_TTL)
    own = tenant.max_key_ttl
    return platform if own is None else min(platform, own)


def key_ttl_floor() -> int:
    """The shortest key TTL a tenant may set: above the broker's visibility timeout (a run whose
    worker died is redelivered before its keys expire, as swrly.E004 asks of the platform TTL)
    and above RUN_REQUEUE_AFTER plus the sweep interval (a run whose message was lost is
    enqueued again in time, swrly.E005)."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    sweep = settings.RUN_REQUEUE_AFTER + settings.MAINTENANCE_INTERVAL
    return int(max(visibility, sweep)) + 1


def queue_wait_problem(tenant: Any, ttl: int) -> str | None:
    """The queue-wait budget (swrly.W030) for one tenant: its queued / running limits at even
    one second per run must stay below `ttl` - RUN_REQUEUE_AFTER, or the last run of a full
    queue outlives its keys. None when it holds."""
    queued, running = tenant.queued_runs_limit, max(tenant.running_runs_limit, 1)
    budget = ttl - settings.RUN_REQUEUE_AFTER
    if queued / running < budget:
        return None
    return (
        f"with this tenant's run limits ({queued} queued / {running} running), the last run of "
        f"a full queue would wait longer than {budget} s ({ttl} s - RUN_REQUEUE_AFTER) and "
        "outlive its keys"
    )


class PolicyInvalid(ValueError):
    """A policy change that does not fit; `errors` maps a field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


POLICY_FIELDS = ("allowed_providers", "allowed_models", "max_key_ttl", "retention_days")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_policy(tenant: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
    """The changes normalized (providers in registry order, models de-duplicated); PolicyInvalid
    naming each field that does not fit. Fields absent from `changes` keep the tenant's value."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(changes) - set(POLICY_FIELDS))
    for name in unknown:
        errors[name] = ["unknown field"]
    out: dict[str, Any] = {}
    enabled = platform_providers()
    if "allowed_providers" in changes:
        value = changes["allowed_providers"]
        if value is None:
            out["allowed_providers"] = None
        elif not isinstance(value, list | tuple) or not all(isinstance(p, str) for p in value):
            errors["allowed_providers"] = ["a list of provider names, or null for every one"]
        else:
            problems = [
                f"unknown provider {p} (known: {', '.join(PROVIDER_NAMES)})"
                if p not in PROVIDER_NAMES
                else f"{p} is not enabled on this platform ({BASE_URL_SETTING}); a policy "
                "narrows the platform's providers, it cannot add one"
                for p in dict.fromkeys(value)
                if p not in enabled
            ]
            if problems:
                errors["allowed_providers"] = problems
            else:
                out["allowed_providers"] = [p for p in PROVIDER_NAMES if p in set(value)]
    providers = out.get("allowed_providers", tenant.allowed_providers)
    if "allowed_models" in changes:
        value = changes["allowed_models"]
        if value is None:
            value = {}
        if not isinstance(value, dict):
            errors["allowed_models"] = ["an object of provider name to a list of model names"]
        else:
            models: dict[str, list[str]] = {}
            for provider, patterns in value.items():
                where = f"allowed_models.{provider}"
                if provider not in PROVIDER_NAMES:
                    errors[where] = [f"unknown provider (known: {', '.join(PROVIDER_NAMES)})"]
                    continue
                if providers is not None and provider not in providers:
                    errors[where] = [f"{provider} is not an allowed provider of this policy"]
                    continue
                problem = _patterns_problem(patterns)
                if problem:
                    errors[where] = [problem]
                    continue
                models[provider] = list(dict.fromkeys(patterns))
            out["allowed_models"] = {p: models[p] for p in PROVIDER_NAMES if p in models}
    elif providers is not None and tenant.allowed_models:
        # Narrowing the providers drops the model lists of the providers no longer allowed.
        out["allowed_models"] = {
            p: m for p, m in tenant.allowed_models.items() if p in set(providers)
        }
    if "max_key_ttl" in changes:
        value = changes["max_key_ttl"]
        platform, floor = int(settings.BYOK_TOKEN_TTL), key_ttl_floor()
        if value is None:
            out["max_key_ttl"] = None
        elif not _is_int(value) or not floor <= value <= platform:
            errors["max_key_ttl"] = [
                f"seconds from {floor} to {platform} (the platform's BYOK_TOKEN_TTL), or null "
                "for the platform's"
            ]
        elif problem := queue_wait_problem(tenant, value):
            errors["max_key_ttl"] = [problem]
        else:
            out["max_key_ttl"] = value
    if "retention_days" in changes:
        value = changes["retention_days"]
        if value is None:
            out["retention_days"] = None
        elif not _is_int(value) or not 1 <= value <= RETENTION_MAX_DAYS:
            errors["retention_days"] = [
                f"days from 1 to {RETENTION_MAX_DAYS}, or null to keep run content forever"
            ]
        else:
            out["retention_days"] = value
    if errors:
        raise PolicyInvalid(errors)
    return out


def _patterns_problem(patterns: Any) -> str | None:
    if not isinstance(patterns, list) or not patterns:
        return "a list of 1 or more model names (omit the provider to allow every model)"
    if len(patterns) > MAX_MODEL_PATTERNS:
        return f"at most {MAX_MODEL_PATTERNS} model names"
    for pattern in patterns:
        if (
            not isinstance(pattern, str)
            or not 1 <= len(pattern) <= MODEL_PATTERN_MAX_LENGTH
            or "*" in pattern[:-1]
            or pattern == "*"
            or pattern != pattern.strip()
        ):
            return (
                f"model names of 1 to {MODEL_PATTERN_MAX_LENGTH} characters, without spaces "
                "around them; a trailing * allows every model with that prefix"
            )
    return None


def policy_snapshot(tenant: Any) -> dict[str, Any]:
    """The tenant's policy fields as stored (the audit event's before and after)."""
    return {name: getattr(tenant, name) for name in POLICY_FIELDS}


# --- The one write -----------------------------------------------------------------------------


@transaction.atomic
def tenant_policy_update(
    *, tenant: Tenant, changes: Mapping[str, Any], actor: Actor, request: HttpRequest | None = None
) -> dict[str, dict[str, Any]]:
    """Change the tenant's policies (owners only; the caller checks the role), audited
    `tenant.policy_changed` with each changed field's `{from, to}`.

    PolicyInvalid naming each field that does not fit. Returns what changed (empty: nothing did,
    and nothing is audited). Runs already queued keep their stored keys' TTL; a provider or
    model no longer allowed fails them when a worker starts them (`policy_refused`).
    """
    current = Tenant.objects.select_for_update(no_key=True, of=("self",)).get(pk=tenant.pk)
    normalized = validate_policy(current, changes)
    changed = {
        name: {"from": getattr(current, name), "to": value}
        for name, value in normalized.items()
        if getattr(current, name) != value
    }
    if not changed:
        return changed
    for name, change in changed.items():
        setattr(current, name, change["to"])
        setattr(tenant, name, change["to"])
    current.save(update_fields=sorted(changed))
    audit_record(
        tenant=tenant,
        action="tenant.policy_changed",
        actor=actor,
        target=f"tenant:{tenant.slug}",
        metadata=changed,
        request=request,
    )
    return changed
