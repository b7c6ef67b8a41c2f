"""System checks that keep a misconfigured Swrly process from starting."""

from collections.abc import Iterable
from typing import Any, cast

from django.conf import settings
from django.core import checks
from django.core.management.base import SystemCheckError

STARTUP_TAG = "swrly_startup"

_HINTS = {
    "SECRET_KEY": "Set SECRET_KEY (or SECRET_KEY_FILE) to a long random value.",
    "BYOK_ENCRYPTION_KEY": (
        "Set BYOK_ENCRYPTION_KEY (or BYOK_ENCRYPTION_KEY_FILE) to 32 random bytes in urlsafe "
        "base64 (python -m swrly.dev.devstack --generate-key prints one)."
    ),
    "AUDIT_CHAIN_KEY": (
        "Set AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE) to 32 random bytes in urlsafe base64 "
        "(python manage.py audit-checkpoint --generate-keys prints one)."
    ),
    "AUDIT_SIGNING_KEY": (
        "Set AUDIT_SIGNING_KEY (or AUDIT_SIGNING_KEY_FILE) to an Ed25519 private key, 32 bytes "
        "in urlsafe base64, where checkpoints are signed; AUDIT_SIGNING_PUBLIC_KEY alone where "
        "they are only verified (python manage.py audit-checkpoint --generate-keys)."
    ),
    "ALLOWED_HOSTS": "Set ALLOWED_HOSTS to the comma-separated host names this site serves.",
}


@checks.register(STARTUP_TAG, deploy=False)
def check_required_settings(app_configs: Iterable[Any] | None = None, **_: Any) -> list:
    """swrly.E001: a required setting is missing (ALLOWED_HOSTS only when DEBUG is off)."""
    missing = [
        name
        for name in settings.REQUIRED_SETTINGS_MISSING
        if not (name == "ALLOWED_HOSTS" and settings.DEBUG)
    ]
    return [
        checks.Error(
            f"{name} is not set; Swrly refuses to start without it.",
            hint=_HINTS[name],
            id="swrly.E001",
        )
        for name in missing
    ]


@checks.register(STARTUP_TAG)
def check_keyring(app_configs: Iterable[Any] | None = None, **_: Any) -> list:
    """swrly.E002: an encryption key is malformed, of the wrong length, or duplicated."""
    from swrly.keys.errors import KeyringError
    from swrly.keys.keyring import parse_keyring

    if not settings.BYOK_ENCRYPTION_KEY:
        return []  # swrly.E001 already names it
    try:
        parse_keyring(settings.BYOK_ENCRYPTION_KEY, settings.BYOK_ENCRYPTION_KEY_FALLBACKS)
    except KeyringError as exc:
        return [checks.Error(str(exc), hint=_HINTS["BYOK_ENCRYPTION_KEY"], id="swrly.E002")]
    return []


@checks.register(STARTUP_TAG)
def check_audit_keys(app_configs: Iterable[Any] | None = None, **_: Any) -> list:
    """swrly.E007: an audit chain or checkpoint signing key is malformed or duplicated."""
    from swrly.audit.keys import AuditKeyError, chain_keyring, signing_keyring

    errors = []
    for name, load in (("AUDIT_CHAIN_KEY", chain_keyring), ("AUDIT_SIGNING_KEY", signing_keyring)):
        if name in settings.REQUIRED_SETTINGS_MISSING:
            continue  # swrly.E001 already names it
        try:
            load()
        except AuditKeyError as exc:
            errors.append(checks.Error(str(exc), hint=_HINTS[name], id="swrly.E007"))
    return errors


@checks.register(STARTUP_TAG)
def check_provider_base_urls(app_configs: Iterable[Any] | None = None, **_: Any) -> list:
    """swrly.E003: a PROVIDER_BASE_URLS entry breaks the egress rules."""
    from runs.providers.egress import base_url_problem

    return [
        checks.Error(
            f"PROVIDER_BASE_URLS[{provider}] {problem}",
            hint="Use https://, or http:// on a loopback address with DEBUG on (for the sandbox).",
            id="swrly.E003",
        )
        for provider, url in settings.PROVIDER_BASE_URLS.items()
        if (problem := base_url_problem(provider, url, debug=settings.DEBUG))
    ]


@checks.register(STARTUP_TAG)
def check_run_timing(app_configs: Iterable[Any] | None = None, **_: Any) -> list:
    """swrly.E004, E005: a run must be redelivered or re-enqueued before its keys expire."""
    ttl = settings.BYOK_TOKEN_TTL
    found = []
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    if visibility >= ttl:
        found.append(
            checks.Error(
                f"CELERY_VISIBILITY_TIMEOUT ({visibility} s) is not below BYOK_TOKEN_TTL "
                f"({ttl} s): a run whose worker died would be redelivered only after its keys "
                "expired.",
                hint="Keep CELERY_VISIBILITY_TIMEOUT < BYOK_TOKEN_TTL (docs/operations.md).",
                id="swrly.E004",
            )
        )
    sweep = settings.RUN_REQUEUE_AFTER + settings.MAINTENANCE_INTERVAL
    if sweep >= ttl:
        found.append(
            checks.Error(
                f"RUN_REQUEUE_AFTER + the maintenance interval ({sweep:.0f} s) is not below "
                f"BYOK_TOKEN_TTL ({ttl} s): a run whose message was lost would expire before "
                "the sweeper enqueued it again.",
                hint="Keep RUN_REQUEUE_AFTER < BYOK_TOKEN_TTL - 60 (docs/operations.md).",
                id="swrly.E005",
            )
        )
    return found


@checks.register(STARTUP_TAG)
def check_trusted_proxies(app_configs: Iterable[Any] | None = None, **_: Any) -> list:
    """swrly.E006: a TRUSTED_PROXIES entry is not an address or network, or is every address.

    Trusting every address (0.0.0.0/0, ::/0) would make every hop a proxy's, so the leftmost
    hop, which the client writes, would be its address: any client could choose it.
    """
    import ipaddress

    errors = []
    for entry in settings.TRUSTED_PROXIES:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            errors.append(
                checks.Error(
                    f"TRUSTED_PROXIES entry {entry!r} is not an IP address or network",
                    hint="Use CIDRs such as 10.0.0.0/8 or single addresses, comma-separated.",
                    id="swrly.E006",
                )
            )
            continue
        if network.prefixlen == 0:
            errors.append(
                checks.Error(
                    f"TRUSTED_PROXIES entry {entry!r} trusts every address: any client could "
                    "choose its own address with X-Forwarded-For",
                    hint="List the proxies' own networks only (docs/operations.md, "
                    '"Behind a proxy").',
                    id="swrly.E006",
                )
            )
    return errors


KEY_STORE_TAG = "swrly_key_store"


@checks.register(KEY_STORE_TAG)
def check_key_store(app_configs: Iterable[Any] | None = None, **_: Any) -> list:
    """swrly.W010 to W013, I010: the key-store Redis must neither persist nor evict tokens.

    On a Sentinel URL the primary is checked, on a cluster every primary (each finding once).
    """
    import redis

    from swrly.keys.errors import KeyStoreUnavailable
    from swrly.keys.store import get_client
    from swrly.redis_urls import primaries

    found: dict[str, Any] = {}
    try:
        for node in primaries(get_client()):
            config: dict[str, str] = {}
            for name in ("save", "appendonly", "maxmemory", "maxmemory-policy"):
                # One name per call: Redis 6.2 takes one. (redis-py types replies "Awaitable or
                # Any".)
                config.update(cast("dict[str, str]", node.config_get(name)))
            for message in _key_store_config_findings(config):
                found.setdefault(message.id, message)
    except redis.ResponseError:
        return [
            checks.Info(
                "The key-store Redis refuses CONFIG GET (managed Redis?): Swrly could not verify "
                "that it keeps nothing on disk and never evicts tokens early.",
                hint="Confirm with your provider: no RDB/AOF persistence, maxmemory-policy "
                "noeviction.",
                id="swrly.I010",
            )
        ]
    except (redis.RedisError, KeyStoreUnavailable):
        return [
            checks.Warning(
                "The key-store Redis (BYOK_REDIS_URL) did not answer; its configuration was not "
                "checked.",
                id="swrly.W010",
            )
        ]
    return list(found.values())


def _key_store_config_findings(config: dict[str, str]) -> list:
    """W011 to W013 for one key-store node's configuration."""
    found = []
    if config.get("save"):
        found.append(
            checks.Warning(
                f"The key-store Redis writes RDB snapshots (save {config['save']!r}): encrypted "
                "tokens reach its disk.",
                hint='Set `save ""` on the key-store Redis.',
                id="swrly.W011",
            )
        )
    if config.get("appendonly") == "yes":
        found.append(
            checks.Warning(
                "The key-store Redis keeps an append-only file: encrypted tokens reach its disk.",
                hint="Set `appendonly no` on the key-store Redis.",
                id="swrly.W012",
            )
        )
    if config.get("maxmemory", "0") != "0" and config.get("maxmemory-policy") != "noeviction":
        found.append(
            checks.Warning(
                f"The key-store Redis evicts keys under memory pressure "
                f"(maxmemory-policy {config.get('maxmemory-policy')}): a token could vanish "
                "before its TTL and its run fail as key_expired.",
                hint="Set maxmemory-policy noeviction on the key-store Redis.",
                id="swrly.W013",
            )
        )
    return found


KEY_USAGE_TAG = "swrly_key_usage"


@checks.register(KEY_USAGE_TAG)
def check_key_usage(app_configs: Iterable[Any] | None = None, **_: Any) -> list:
    """swrly.W014, E008, E009: the current encryption key's AES-GCM usage budget.

    Runs with `manage.py check` and every command that runs the checks (not at process start:
    it reads the database). W014 from BYOK_KEY_USAGE_WARN_AT seals, E008 at 2**32.
    """
    from django.db import DatabaseError

    from swrly.custody.key_usage import encryption_key_usage, usage_warn_at
    from swrly.keys.errors import KeyringError
    from swrly.keys.usage import SAFE_LIMIT

    warn_at = usage_warn_at()
    if not 0 < warn_at < SAFE_LIMIT:
        return [
            checks.Error(
                f"BYOK_KEY_USAGE_WARN_AT ({warn_at}) must be between 1 and 2**32 - 1.",
                hint="Leave it unset (2**30) unless you mean to be warned earlier.",
                id="swrly.E009",
            )
        ]
    try:
        usage = encryption_key_usage()
    except (DatabaseError, KeyringError):
        return []  # no ledger yet (before `migrate`), or E001/E002 already name the key
    current = next(row for row in usage if row.role == "current")
    hint = (
        "Rotate the encryption key: `manage.py rotate-keys --generate` and its rollout "
        "(docs/operations.md); a new key starts a new budget."
    )
    if current.state == "exhausted":
        return [
            checks.Error(
                f"The current encryption key {current.key_id} has sealed {current.sealed} tokens, "
                "at or past 2**32, the AES-GCM bound for random 96-bit nonces (NIST SP 800-38D): "
                "a repeated nonce is no longer negligible.",
                hint=hint,
                id="swrly.E008",
            )
        ]
    if current.state == "warning":
        return [
            checks.Warning(
                f"The current encryption key {current.key_id} has sealed {current.sealed} tokens "
                f"({current.percent:.1f}% of the 2**32 AES-GCM budget; warned from "
                f"BYOK_KEY_USAGE_WARN_AT = {warn_at}).",
                hint=hint,
                id="swrly.W014",
            )
        ]
    return []


def raise_on_startup_errors() -> None:
    """Run the start-up checks where Django does not (gunicorn, Celery workers)."""
    errors = [e for e in checks.run_checks(tags=[STARTUP_TAG]) if e.is_serious()]
    if errors:
        raise SystemCheckError("\n".join(str(e) for e in errors))
