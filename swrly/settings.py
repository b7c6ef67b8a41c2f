"""Swrly settings, read from the environment through django-environ.

Every variable is listed in README.md. Secrets have no defaults: when one is missing the
`swrly.E001` system check names it and the platform refuses to start (see swrly/checks.py).
There is deliberately no setting for a platform-wide model-provider key: BYOK is the only mode.
"""

import os
from pathlib import Path

import environ

from swrly.logs import logging_config
from swrly.providers import default_base_urls

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
ENV_FILE = Path(env.str("SWRLY_ENV_FILE", default=str(BASE_DIR / ".env")))
_SHELL_NAMES = frozenset(os.environ)  # what the shell set, before the .env adds to it
if ENV_FILE.is_file():
    # Values already in the process environment win over the file.
    env.read_env(ENV_FILE, overwrite=False)


def _secret(name: str) -> str:
    """A secret from NAME, or from the file NAME_FILE names (container secrets)."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return env.str(name, default="")


DEBUG = env.bool("DEBUG", default=False)

# --- make run's runtime file (issue 15 §6; docs/operations.md "Under make run") ---
# With DEBUG only: while `make run` is up, a command started in another shell reaches its
# database, key store, broker, cache and sandbox. The stack publishes their URLs in
# .swrly/runtime.env beside the .env; names the shell did not set are taken from it (over the
# .env's). A file left by a launcher that no longer runs is ignored. With DEBUG off nothing is
# read and swrly.dev is not imported.
if DEBUG:
    from swrly.dev.runtime import apply_live_runtime

    DEVSTACK_RUNTIME = apply_live_runtime(ENV_FILE, shell_names=_SHELL_NAMES)
else:
    DEVSTACK_RUNTIME = None
# --- end make run's runtime file ---

SECRET_KEY = _secret("SECRET_KEY")
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
BYOK_ENCRYPTION_KEY = _secret("BYOK_ENCRYPTION_KEY")
BYOK_ENCRYPTION_KEY_FALLBACKS = env.list("BYOK_ENCRYPTION_KEY_FALLBACKS", default=[])
# The audit chain's HMAC key (new events) and previous ones (events they chained still verify).
AUDIT_CHAIN_KEY = _secret("AUDIT_CHAIN_KEY")
AUDIT_CHAIN_KEY_FALLBACKS = env.list("AUDIT_CHAIN_KEY_FALLBACKS", default=[])
# The Ed25519 key that signs audit checkpoints (needed where checkpoints are signed: the beat
# worker and `manage.py audit-checkpoint`); hosts that only verify may set the public key alone.
# Retired public keys stay listed so that the checkpoints they signed keep verifying.
AUDIT_SIGNING_KEY = _secret("AUDIT_SIGNING_KEY")
AUDIT_SIGNING_PUBLIC_KEY = env.str("AUDIT_SIGNING_PUBLIC_KEY", default="")
AUDIT_SIGNING_KEY_FALLBACKS = env.list("AUDIT_SIGNING_KEY_FALLBACKS", default=[])
# Seconds between signed checkpoints of every chain with new events (beat).
AUDIT_CHECKPOINT_INTERVAL = env.int("AUDIT_CHECKPOINT_INTERVAL", default=3600)
# Audit webhooks (a tenant's SIEM receives its audit chain; docs/operations.md): which hosts a
# webhook may name (empty: any public host; `example.com` exact, `.example.com` its subdomains),
# which it may not (wins), and whether private, loopback and link-local addresses are allowed
# (and plain http to loopback; DEBUG allows loopback too). Deliveries: every
# AUDIT_WEBHOOK_INTERVAL seconds (beat), up to AUDIT_WEBHOOK_BATCH events per POST and
# AUDIT_WEBHOOK_MAX_BATCHES POSTs per webhook per round, AUDIT_WEBHOOK_TIMEOUT seconds per POST;
# a failure waits AUDIT_WEBHOOK_RETRY_BASE x 2^(failures - 1) seconds, at most _RETRY_MAX.
AUDIT_WEBHOOK_ALLOWED_HOSTS = env.list("AUDIT_WEBHOOK_ALLOWED_HOSTS", default=[])
AUDIT_WEBHOOK_DENIED_HOSTS = env.list("AUDIT_WEBHOOK_DENIED_HOSTS", default=[])
AUDIT_WEBHOOK_ALLOW_PRIVATE = env.bool("AUDIT_WEBHOOK_ALLOW_PRIVATE", default=False)
AUDIT_WEBHOOK_INTERVAL = env.int("AUDIT_WEBHOOK_INTERVAL", default=10)
AUDIT_WEBHOOK_BATCH = env.int("AUDIT_WEBHOOK_BATCH", default=100)
AUDIT_WEBHOOK_MAX_BATCHES = env.int("AUDIT_WEBHOOK_MAX_BATCHES", default=50)
AUDIT_WEBHOOK_TIMEOUT = env.float("AUDIT_WEBHOOK_TIMEOUT", default=10.0)
AUDIT_WEBHOOK_RETRY_BASE = env.int("AUDIT_WEBHOOK_RETRY_BASE", default=10)
AUDIT_WEBHOOK_RETRY_MAX = env.int("AUDIT_WEBHOOK_RETRY_MAX", default=3600)
AUDIT_WEBHOOK_MAX_PER_TENANT = env.int("AUDIT_WEBHOOK_MAX_PER_TENANT", default=5)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Read by the swrly.E001 check: required settings that are absent. Django itself refuses an
# empty SECRET_KEY only when something first reads it; the check says so at start instead.
REQUIRED_SETTINGS_MISSING = [
    name
    for name, value in (
        ("SECRET_KEY", SECRET_KEY),
        ("BYOK_ENCRYPTION_KEY", BYOK_ENCRYPTION_KEY),
        ("AUDIT_CHAIN_KEY", AUDIT_CHAIN_KEY),
        ("AUDIT_SIGNING_KEY", AUDIT_SIGNING_KEY or AUDIT_SIGNING_PUBLIC_KEY),
        ("ALLOWED_HOSTS", ALLOWED_HOSTS),
    )
    if not value
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "axes",
    "swrly",
    "swrly.audit",
    "tenants",
    "swrly.custody",
    "runs",
    "swrly.evidence",
]

MIDDLEWARE = [
    # Outermost: error pages and e-mails are rendered inside it, while the keys are still known.
    "swrly.middleware.RedactionScopeMiddleware",
    "swrly.logs.RequestIdMiddleware",
    "swrly.health.HealthMiddleware",  # /healthz and /readyz, before host checks and redirects
    "django.middleware.security.SecurityMiddleware",
    "swrly.middleware.RequestLimitsMiddleware",
    "swrly.middleware.StorableInputMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",
    # Innermost: Swrly's 404 page even with DEBUG on (swrly/web/error_pages.py).
    "swrly.web.error_pages.NotFoundPageMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "swrly.urls"
WSGI_APPLICATION = "swrly.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # BEGIN IMMEDIATE: writers queue on the database lock instead of failing mid-transaction,
    # which the per-tenant audit chain relies on.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20}
    )
    # A file, not Django's shared in-memory database, so threads in tests lock as in production;
    # one per process, so two test sessions in one checkout never share it.
    DATABASES["default"].setdefault(
        "TEST", {"NAME": str(BASE_DIR / f"test-db-{os.getpid()}.sqlite3")}
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# --- PostgreSQL behind PgBouncer (issue 14 §5) ---
# DATABASE_POOL_MODE names how the pooler in front of PostgreSQL hands out server connections:
# "session" (or no pooler) or "transaction" (PgBouncer's pool_mode=transaction). Under
# transaction pooling consecutive transactions of one Django connection may run on different
# server connections, so nothing may outlive a transaction on the server: no server-side
# cursors (`.iterator()` declares one; the exports and chain verification read by keyset
# instead), and no prepared statements (psycopg's prepare_threshold=None, Django's default with
# psycopg 3, kept explicit here because PgBouncer before 1.21 cannot track them).
DATABASE_POOL_MODE = env.str("DATABASE_POOL_MODE", default="session")
if DATABASE_POOL_MODE not in ("session", "transaction"):
    raise environ.ImproperlyConfigured(
        f"DATABASE_POOL_MODE must be 'session' or 'transaction', not {DATABASE_POOL_MODE!r}"
    )
if DATABASE_POOL_MODE == "transaction" and DATABASES["default"]["ENGINE"] != (
    "django.db.backends.sqlite3"
):
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None
# --- end PgBouncer ---

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "swrly-cache",
        # The cache only counts API requests for throttling: if Redis is down, requests are let
        # through rather than refused.
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2, "IGNORE_EXCEPTIONS": True},
    },
}

# --- BYOK key store ---------------------------------------------------------------------------
# Its own Redis (no persistence, no eviction; see docs/security.md), the main one by default.
BYOK_REDIS_URL = env.str("BYOK_REDIS_URL", default=REDIS_URL)
BYOK_TOKEN_TTL = env.int("BYOK_TOKEN_TTL", default=900)
# Seals under one encryption key at which `manage.py check` warns (swrly.W014); it fails at
# 2**32, the AES-GCM bound for random nonces (swrly.E008). docs/security.md "Usage budget".
BYOK_KEY_USAGE_WARN_AT = env.int("BYOK_KEY_USAGE_WARN_AT", default=2**30)
DEFAULT_EXCEPTION_REPORTER_FILTER = "swrly.keys.redaction.RedactingExceptionReporterFilter"
DEFAULT_EXCEPTION_REPORTER = "swrly.keys.redaction.RedactingExceptionReporter"

# --- Model providers: the egress allow-list -------------------------------------------------
# The only places a customer's key is ever sent. Operators may add `sandbox` or point a provider
# at their own gateway; plain http:// is accepted only for loopback and only with DEBUG
# (swrly.E003). Nothing in a workflow or a request can name another address.
# An entry with an empty value (`openai=`) disables that provider. The defaults (Anthropic's
# and OpenAI's public APIs) are the registry's (swrly/providers.py).
PROVIDER_BASE_URLS = {
    name: url
    for name, url in {
        **default_base_urls(),
        **env.dict("PROVIDER_BASE_URLS", default={}),
    }.items()
    if url
}
PROVIDER_CONNECT_TIMEOUT = env.float("PROVIDER_CONNECT_TIMEOUT", default=5.0)
PROVIDER_READ_TIMEOUT = env.float("PROVIDER_READ_TIMEOUT", default=120.0)
PROVIDER_MAX_RETRIES = env.int("PROVIDER_MAX_RETRIES", default=2)

# A running run whose worker has not reported for this long is marked failed (interrupted).
# It must exceed the longest step: (connect + read timeout) x (retries + 1) plus back-off.
RUN_INTERRUPTED_AFTER = env.int("RUN_INTERRUPTED_AFTER", default=900)

# A streamed step's output so far is written at most this often (seconds): what the run page and
# the API show while the step runs, and how soon a cancellation stops it.
STREAM_PROGRESS_INTERVAL = env.float("STREAM_PROGRESS_INTERVAL", default=0.5)

# A queued run that no worker has claimed this long after it was enqueued is enqueued again
# (its message was lost, or its claim failed), as long as its keys are still valid. A duplicate
# delivery is harmless: the claim is a conditional update. Must stay below BYOK_TOKEN_TTL - 60
# (the sweep runs every minute; swrly.E005).
RUN_REQUEUE_AFTER = env.int("RUN_REQUEUE_AFTER", default=120)

# --- Run fairness and backpressure (issue 14 §3; docs/operations.md) ---
# Per tenant (a tenant's own limits, set with `manage.py tenant-limits`, override these): at most
# RUN_MAX_QUEUED_PER_TENANT runs waiting for a worker (over it, POST /api/v1/runs/ answers 429
# `run_queue_full` before any key is deposited) and at most RUN_MAX_RUNNING_PER_TENANT running.
# A worker that picks up a run of a tenant at its running limit leaves it queued, its keys
# untouched, and enqueues it again RUN_DEFER_DELAY seconds later. Queue wait budget:
# queued limit / (running limit x runs per second per slot) well below BYOK_TOKEN_TTL.
RUN_MAX_QUEUED_PER_TENANT = env.int("RUN_MAX_QUEUED_PER_TENANT", default=100)
RUN_MAX_RUNNING_PER_TENANT = env.int("RUN_MAX_RUNNING_PER_TENANT", default=10)
RUN_DEFER_DELAY = env.float("RUN_DEFER_DELAY", default=2.0)
# --- end Run fairness and backpressure ---

# --- Run retries when the key store does not answer (docs/operations.md "Failover runbook") ---
# A worker whose first GETDEL of a run meets an unavailable key store (a Sentinel failover) has
# taken no key: it puts the run back in the queue, its tokens untouched (`run.released`), and
# tries it again RUN_KEY_STORE_RETRY_DELAY seconds later, at most RUN_KEY_STORE_RETRIES times and
# only while the keys stay valid for twice the delay; after that the run fails
# `key_store_unavailable`. Retries x delay should cover the sentinels' down-after-milliseconds
# plus the promotion.
RUN_KEY_STORE_RETRIES = env.int("RUN_KEY_STORE_RETRIES", default=3)
RUN_KEY_STORE_RETRY_DELAY = env.float("RUN_KEY_STORE_RETRY_DELAY", default=5.0)
# --- end Run retries when the key store does not answer ---

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
# The Redis broker hands an unacknowledged message (its worker died) to another worker after
# the visibility timeout. Below BYOK_TOKEN_TTL (swrly.E004), so a redelivered run still finds
# its keys; a redelivery of a run that is already running does nothing.
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=300)
# Every broker call has a deadline: a hung broker (it accepts connections, never answers) fails a
# publish after CELERY_BROKER_SOCKET_TIMEOUT seconds instead of holding the request until the web
# server kills it. Publishing retries once (CELERY_TASK_PUBLISH_RETRY_POLICY), so a POST waits at
# most about twice this for the broker. Above the workers' 1 s BRPOP poll, which it also bounds.
CELERY_BROKER_SOCKET_TIMEOUT = env.float("CELERY_BROKER_SOCKET_TIMEOUT", default=5.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "socket_timeout": CELERY_BROKER_SOCKET_TIMEOUT,
    "socket_connect_timeout": CELERY_BROKER_SOCKET_TIMEOUT,
}
CELERY_BROKER_CONNECTION_TIMEOUT = CELERY_BROKER_SOCKET_TIMEOUT
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Runs go to the default queue; maintenance (the reaper and sweeper) to its own queue and its own
# worker, so it never waits behind a backlog of runs nor dies with a run worker.
CELERY_TASK_DEFAULT_QUEUE = "celery"
MAINTENANCE_QUEUE = "maintenance"
CELERY_TASK_ROUTES = {
    name: {"queue": MAINTENANCE_QUEUE}
    for name in (
        "runs.tasks.reap_runs",
        "runs.tasks.sweep_orphan_tokens",
        "swrly.audit.tasks.flush_audit_suppressed",
        "swrly.audit.tasks.audit_checkpoint",
        "swrly.audit.tasks.deliver_audit_webhooks",
        "swrly.custody.tasks.record_key_usage",
    )
}
# --- Broker: RabbitMQ or Redis (issue 14 §2; docs/operations.md "Broker: RabbitMQ or Redis") ---
# CELERY_BROKER_URL may name RabbitMQ (amqp://, amqps://) as well as Redis: only settings differ.
# Each transport reads its own keys from the one dict of transport options (kombu's Redis
# transport ignores the AMQP keys, py-amqp the Redis ones), so any process may publish to
# either broker. On AMQP: every publish waits for the broker's confirm (a POST answers 202 only
# once its run's message is in the queue, never for a message a dying connection swallowed),
# and reads and writes have the same deadline as connecting, so a hung broker fails a publish
# after about CELERY_BROKER_SOCKET_TIMEOUT seconds (x2: the publish is retried once).
CELERY_BROKER_TRANSPORT_OPTIONS.update(
    {
        "confirm_publish": True,
        "read_timeout": CELERY_BROKER_SOCKET_TIMEOUT,
        "write_timeout": CELERY_BROKER_SOCKET_TIMEOUT,
    }
)
# amqps://: py-amqp checks the broker's certificate chain but, unless told the server's name,
# not that the certificate names the host; this tells it the URL's host (kombu fills it in).
# The CA store is the system's (SSL_CERT_FILE names another). Only for amqps: any other
# scheme given an ssl dict would start TLS (amqp) or refuse the key (Redis).
if CELERY_BROKER_URL.startswith("amqps://"):
    CELERY_BROKER_USE_SSL = {"server_hostname": None}
# Seconds between AMQP heartbeats on a worker's connection: a broker that vanished without
# closing it (a dead host, a partition) is noticed after two missed beats. (Redis: unused.)
CELERY_BROKER_HEARTBEAT = env.int("CELERY_BROKER_HEARTBEAT", default=30)
# The run and maintenance queues, declared alike for every broker. On RabbitMQ they are durable
# quorum queues (replicated, fsynced: queued runs outlive a broker restart or a lost node); a
# redelivery after a lost worker is harmless (the run's claim is a conditional update), so no
# delivery limit or dead-lettering. Topic exchanges: Celery's native delayed delivery (a retry's
# countdown on quorum queues) routes through them. With quorum queues Celery uses per-consumer
# prefetch (no global QoS, which quorum queues refuse), as worker_detect_quorum_queues does by
# default. Redis ignores the queue arguments and routes a topic exchange as it did a direct one.
CELERY_TASK_QUEUES = {
    name: {
        "exchange": name,
        "exchange_type": "topic",
        "routing_key": name,
        "durable": True,
        "queue_arguments": {"x-queue-type": "quorum"},
    }
    for name in (CELERY_TASK_DEFAULT_QUEUE, MAINTENANCE_QUEUE)
}
# Declares all of them whenever a worker connects to RabbitMQ (swrly/celery.py).
CELERY_WORKER_CONSUMER = "swrly.celery:Consumer"
# After a lost connection Celery lowers the prefetch while earlier tasks still run, then raises
# it again with basic.qos as each is acknowledged. On RabbitMQ with per-consumer QoS that comes
# to nothing (celery/celery#9512, fixed after 5.6.3), and with the threads pool the basic.qos
# is sent from a task's thread while the event loop uses the same connection: the broker-restart
# test saw workers whose acknowledgements then failed ("connection already closed") for good.
CELERY_WORKER_ENABLE_PREFETCH_COUNT_REDUCTION = not CELERY_BROKER_URL.startswith(
    ("amqp://", "amqps://", "pyamqp://")
)
# --- end Broker ---
MAINTENANCE_INTERVAL = 60.0
CELERY_BEAT_SCHEDULE = {
    "reap-runs": {
        "task": "runs.tasks.reap_runs",
        "schedule": MAINTENANCE_INTERVAL,
        # A sweep nobody ran in time is dropped, not queued behind the next one.
        "options": {"expires": MAINTENANCE_INTERVAL - 5},
    },
    "flush-audit-suppressed": {
        "task": "swrly.audit.tasks.flush_audit_suppressed",
        "schedule": MAINTENANCE_INTERVAL,
        "options": {"expires": MAINTENANCE_INTERVAL - 5},
    },
    "sweep-orphan-tokens": {
        "task": "runs.tasks.sweep_orphan_tokens",
        "schedule": MAINTENANCE_INTERVAL,
        "options": {"expires": MAINTENANCE_INTERVAL - 5},
    },
    "record-key-usage": {
        "task": "swrly.custody.tasks.record_key_usage",
        "schedule": MAINTENANCE_INTERVAL,
        "options": {"expires": MAINTENANCE_INTERVAL - 5},
    },
    "audit-checkpoint": {
        "task": "swrly.audit.tasks.audit_checkpoint",
        "schedule": float(AUDIT_CHECKPOINT_INTERVAL),
    },
    "deliver-audit-webhooks": {
        "task": "swrly.audit.tasks.deliver_audit_webhooks",
        "schedule": float(AUDIT_WEBHOOK_INTERVAL),
        "options": {"expires": max(1.0, AUDIT_WEBHOOK_INTERVAL - 1.0)},
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Hashed, compressed static files (after `collectstatic`) unless DEBUG or STATIC_MANIFEST=False.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("STATIC_MANIFEST", default=not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- HTTP security -------------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("TRUST_X_FORWARDED_PROTO", False) else None
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024)

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
    },
}

# Audit events anyone can cause (failed sign-ins, lockouts, denied accesses) are bounded per
# tenant chain, action and window: at most AUDIT_FLOOD_PER_SOURCE per actor and address and
# AUDIT_FLOOD_PER_CHAIN in all; the rest are summed into one audit.suppressed event.
AUDIT_FLOOD_WINDOW = env.int("AUDIT_FLOOD_WINDOW", default=300)
AUDIT_FLOOD_PER_SOURCE = env.int("AUDIT_FLOOD_PER_SOURCE", default=5)
AUDIT_FLOOD_PER_CHAIN = env.int("AUDIT_FLOOD_PER_CHAIN", default=30)

# Login lockout (django-axes): AXES_FAILURE_LIMIT failures per username and IP pair.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "swrly.http.client_ip"

# --- API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.api.authentication.ApiTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.api.permissions.HasTenantRole"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["swrly.web.parsers.SafeJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "swrly.web.schema.SwrlyAutoSchema",
    "EXCEPTION_HANDLER": "swrly.web.errors.exception_handler",
    # No ?format= switch: content negotiation is by Accept only (an unknown format was a 404).
    "URL_FORMAT_OVERRIDE": None,
    # No DRF throttles: both API rate limits are counted in one Redis round trip by
    # swrly.middleware.RequestLimitsMiddleware, before authentication.
    "DEFAULT_THROTTLE_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}
# Proxies (CIDRs) whose X-Forwarded-For is believed; the client address is the first hop from
# the right that is not one of them. Empty: the peer address (REMOTE_ADDR) is the client.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

# API rate limits ("N/s", "N/min", "N/hour"; empty disables): per bearer token and per client
# address, both before authentication (so guessing tokens is throttled too), in one Redis round
# trip. 429 with Retry-After.
API_RATE_PER_TOKEN = env.str("API_RATE_PER_TOKEN", default="600/min")
API_RATE_PER_IP = env.str("API_RATE_PER_IP", default="1200/min")

SPECTACULAR_SETTINGS = {
    "TITLE": "Swrly API",
    "DESCRIPTION": "Run AI-agent workflows with your own model-provider keys (BYOK).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # assets served from this site, never a CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.models.RunStatus",
        "StepStatusEnum": "runs.models.StepStatus",
        "RoleEnum": "tenants.models.Role",
    },
}

# Error e-mails: with DEBUG off, Django's default logging (the `django` logger's mail_admins
# handler, kept by LOGGING below) mails every unhandled request exception to ADMINS
# (comma-separated addresses; none by default). The report is made by the redacting
# DEFAULT_EXCEPTION_REPORTER(_FILTER) above while the request's keys are still known.
ADMINS = [(address, address) for address in env.list("ADMINS", default=[])]
SERVER_EMAIL = env.str("SERVER_EMAIL", default="root@localhost")
vars().update(env.email_url("EMAIL_URL", default="smtp://localhost:25"))

# Health checks (swrly/health.py): /readyz answers within READYZ_TIMEOUT seconds, failing
# whichever check (database, key store, broker) has not answered by then.
READYZ_TIMEOUT = env.float("READYZ_TIMEOUT", default=2.0)

# Console logs, plain text or one JSON object per line, each with the request id (swrly/logs.py).
LOGGING = logging_config(
    log_format=env.str("LOG_FORMAT", default="plain"),
    level=env.str("LOG_LEVEL", default="INFO"),
    levels=env.dict("LOG_LEVELS", default={}),  # single loggers: celery.beat=WARNING,…
)

# --- Metrics (Prometheus; swrly/metrics.py, docs/operations.md "Metrics") -------------------
# GET /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset: metrics are off (404).
# `python -m swrly.metrics` serves a worker-only node's metrics on METRICS_HOST:METRICS_PORT.
# Several processes per node: set PROMETHEUS_MULTIPROC_DIR (read by prometheus-client itself).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_HOST = env.str("METRICS_HOST", default="127.0.0.1")
METRICS_PORT = env.int("METRICS_PORT", default=9464)

# --- Tenant policies and retention (issue 15 §5; docs/operations.md) -------------------------
# Tenants' own policies (providers and models, key TTL, retention) are set by their owners on the
# settings page or at /api/v1/policy/; these settings bound the purge of run content that a
# tenant's retention period asks for: every RETENTION_PURGE_INTERVAL seconds (beat, maintenance
# queue), batches of RETENTION_PURGE_BATCH runs, at most RETENTION_PURGE_MAX_BATCHES per tenant
# per pass (the next pass goes on).
RETENTION_PURGE_INTERVAL = env.float("RETENTION_PURGE_INTERVAL", default=3600.0)
RETENTION_PURGE_BATCH = env.int("RETENTION_PURGE_BATCH", default=500)
RETENTION_PURGE_MAX_BATCHES = env.int("RETENTION_PURGE_MAX_BATCHES", default=20)
CELERY_TASK_ROUTES["runs.tasks.purge_run_content"] = {"queue": MAINTENANCE_QUEUE}
CELERY_BEAT_SCHEDULE["purge-run-content"] = {
    "task": "runs.tasks.purge_run_content",
    "schedule": RETENTION_PURGE_INTERVAL,
    # A pass nobody ran in time is dropped, not queued behind the next one.
    "options": {"expires": max(1.0, RETENTION_PURGE_INTERVAL - 5)},
}
# --- end Tenant policies and retention ---

# --- Identity: invitations and MFA (issue 15 §4; docs/security.md, "Identity") ---
# Members join by an e-mailed single-use link that expires after INVITATION_TTL seconds; links
# made outside a request (none today) start with SITE_URL. Under `make run` the e-mail goes to
# the console (EMAIL_URL=consolemail://). Second factors are django-otp's TOTP and static
# (recovery code) devices; a failed code waits OTP_*_THROTTLE_FACTOR x 2^(failures - 1) seconds
# and counts toward the django-axes lockout like a wrong password.
INSTALLED_APPS += [
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "swrly.identity",
]
# After authentication and messages: generated passwords are changed, MFA sessions verified
# and tenants' MFA policies enforced before any view runs.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.messages.middleware.MessageMiddleware") + 1,
    "swrly.identity.middleware.IdentityMiddleware",
)
INVITATION_TTL = env.int("INVITATION_TTL", default=72 * 3600)
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="swrly@localhost")
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Swrly")
OTP_TOTP_THROTTLE_FACTOR = env.int("OTP_TOTP_THROTTLE_FACTOR", default=1)
OTP_STATIC_THROTTLE_FACTOR = env.int("OTP_STATIC_THROTTLE_FACTOR", default=1)
# Seconds between the password and the second factor at sign-in.
MFA_SIGN_IN_WINDOW = env.int("MFA_SIGN_IN_WINDOW", default=300)
# --- end Identity ---

# --- The OpenAPI schema for generated clients (issue 16 §1; swrly/web/schema.py) -----------
# Request and response bodies as separate components (read-only fields only in answers,
# write-only ones, a run's keys, only in requests); an enum that admits "" declares it among
# its values; the run error codes' enum is RunErrorCodeEnum.
SPECTACULAR_SETTINGS |= {
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "swrly.web.schema.declare_blank_in_enums",
    ],
    "ENUM_NAME_OVERRIDES": {
        # (the dict above mixes value types: mypy sees this one as an object)
        **SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"],  # type: ignore[dict-item]
        "RunErrorCodeEnum": "runs.models.RunError",
    },
}
