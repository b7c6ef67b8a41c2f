"""Start-up configuration: required settings, `check --deploy`, and no platform provider key."""

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from swrly.dev.devstack import start_embedded_valkey
from swrly.keys.keyring import generate_key

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args, **env_overrides):
    env = {
        key: value
        for key, value in os.environ.items()
        # DJANGO_ALLOW_ASYNC_UNSAFE: set by the browser tests' session; production never has it.
        if key
        not in {
            "SECRET_KEY",
            "BYOK_ENCRYPTION_KEY",
            "AUDIT_CHAIN_KEY",
            "AUDIT_SIGNING_KEY",
            "ALLOWED_HOSTS",
            "DEBUG",
            "DJANGO_ALLOW_ASYNC_UNSAFE",
        }
    }
    env.update({"SWRLY_ENV_FILE": os.devnull, **env_overrides})
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


PRODUCTION = {
    "DEBUG": "False",
    "SECRET_KEY": "",  # filled per test
    "BYOK_ENCRYPTION_KEY": "",
    "AUDIT_CHAIN_KEY": "",
    "AUDIT_SIGNING_KEY": "",
    "ALLOWED_HOSTS": "swrly.example.com",
    "SECURE_SSL_REDIRECT": "True",
    "SECURE_HSTS_PRELOAD": "True",
    "STATIC_MANIFEST": "True",
}


def _production(**overrides):
    import secrets

    env = {**PRODUCTION, **overrides}
    env["SECRET_KEY"] = overrides.get("SECRET_KEY", secrets.token_urlsafe(50))
    env["BYOK_ENCRYPTION_KEY"] = overrides.get("BYOK_ENCRYPTION_KEY", generate_key())
    env["AUDIT_CHAIN_KEY"] = overrides.get("AUDIT_CHAIN_KEY", generate_key())
    env["AUDIT_SIGNING_KEY"] = overrides.get("AUDIT_SIGNING_KEY", generate_key())
    return {key: value for key, value in env.items() if value is not None}


def test_check_deploy_passes_with_production_settings():
    # Each Redis role as production has it: the key store on the session's server (nothing on
    # disk), the broker and the cache on a durable one of their own (swrly.W021, W023, I021).
    durable = start_embedded_valkey(
        {"appendonly": "yes", "save": "", "maxmemory-policy": "noeviction"}
    )
    try:
        result = _manage(
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
            **_production(
                BYOK_REDIS_URL=settings.BYOK_REDIS_URL,
                CELERY_BROKER_URL=f"{durable.connection_url}/0",
                REDIS_URL=f"{durable.connection_url}/1",
            ),
        )
    finally:
        durable.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


REQUIRED = ["SECRET_KEY", "BYOK_ENCRYPTION_KEY", "AUDIT_CHAIN_KEY", "AUDIT_SIGNING_KEY"]


@pytest.mark.parametrize("missing", [*REQUIRED, "ALLOWED_HOSTS"])
def test_production_refuses_to_start_without(missing):
    result = _manage("check", **_production(**{missing: None}))
    assert result.returncode != 0
    assert re.search(rf"swrly\.E001\) {missing} is not set", result.stderr), result.stderr
    others = {*REQUIRED, "ALLOWED_HOSTS"} - {missing}
    for name in others:
        assert f"{name} is not set" not in result.stderr


def test_the_wsgi_application_refuses_to_load_without_secrets():
    env = _production(SECRET_KEY=None)
    code = "import swrly.wsgi"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **{k: v for k, v in os.environ.items() if k != "SECRET_KEY"},
            "SWRLY_ENV_FILE": os.devnull,
            **env,
        },
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_secrets_can_come_from_files(tmp_path):
    secret_file = tmp_path / "secret_key"
    secret_file.write_text("from-a-file-" + "x" * 50 + "\n")
    result = _manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.SECRET_KEY[:12])",
        **_production(SECRET_KEY=None, SECRET_KEY_FILE=str(secret_file)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "from-a-file-"


def test_an_empty_provider_url_disables_that_provider():
    result = _manage(
        "shell",
        "-c",
        "from django.conf import settings; print(sorted(settings.PROVIDER_BASE_URLS))",
        **_production(PROVIDER_BASE_URLS="openai=,sandbox=https://sandbox.example"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['anthropic', 'sandbox']"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("sandbox=http://127.0.0.1:9", "allowed only with DEBUG"),
        ("openai=http://10.0.0.5", "only for a loopback address"),
        ("gemini=https://x.example", "unknown provider"),
        ("anthropic=https://user:pw@x.example", "credentials"),
    ],
)
def test_provider_urls_that_break_the_egress_rules_stop_the_start(value, problem):
    result = _manage("check", **_production(PROVIDER_BASE_URLS=value))
    assert result.returncode != 0
    assert "swrly.E003" in result.stderr
    assert problem in result.stderr


def test_no_setting_names_a_platform_provider_key():
    provider_words = ("ANTHROPIC", "OPENAI", "PROVIDER_API_KEY", "PROVIDER_KEY")
    names = [name for name in dir(settings) if name.isupper()]
    assert not [n for n in names if any(word in n for word in provider_words)]
    source = "\n".join(p.read_text() for p in (ROOT / "swrly").rglob("*.py"))
    assert not re.search(r"(ANTHROPIC|OPENAI)_API_KEY", source)


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"CELERY_VISIBILITY_TIMEOUT": "900", "BYOK_TOKEN_TTL": "900"}, "swrly.E004"),
        ({"RUN_REQUEUE_AFTER": "850", "BYOK_TOKEN_TTL": "900"}, "swrly.E005"),
    ],
)
def test_timings_that_let_keys_expire_before_a_retry_stop_the_start(overrides, check_id):
    result = _manage("check", **_production(**overrides))
    assert result.returncode != 0
    assert check_id in result.stderr


@pytest.mark.parametrize(
    "overrides",
    [
        {"RUN_MAX_RUNNING_PER_TENANT": "0"},
        {"RUN_MAX_QUEUED_PER_TENANT": "-1"},
        {"RUN_DEFER_DELAY": "0"},
    ],
)
def test_fairness_limits_no_run_could_get_through_stop_the_start(overrides):
    result = _manage("check", **_production(**overrides))
    assert result.returncode != 0
    assert "swrly.E030" in result.stderr


def test_a_queue_wait_budget_that_cannot_hold_is_a_warning(settings):
    from swrly.checks import check_run_fairness

    assert check_run_fairness() == []  # the defaults
    settings.RUN_MAX_QUEUED_PER_TENANT = 10000
    settings.RUN_MAX_RUNNING_PER_TENANT = 10
    assert [found.id for found in check_run_fairness()] == ["swrly.W030"]
    settings.RUN_MAX_RUNNING_PER_TENANT = 100
    assert check_run_fairness() == []


def test_the_default_timings_redeliver_and_sweep_before_keys_expire():
    from swrly.checks import check_run_timing

    assert check_run_timing() == []
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert visibility < settings.BYOK_TOKEN_TTL
    assert settings.RUN_REQUEUE_AFTER + settings.MAINTENANCE_INTERVAL < settings.BYOK_TOKEN_TTL


def test_audit_keys_can_come_from_files_and_a_verifying_host_needs_only_the_public_key(tmp_path):
    from swrly.audit.keys import public_key_of

    chain_file, signing_file = tmp_path / "chain", tmp_path / "signing"
    chain_file.write_text(generate_key() + "\n")
    signing = generate_key()
    signing_file.write_text(signing + "\n")
    code = (
        "from swrly.audit.keys import chain_keyring, signing_keyring; "
        "print(chain_keyring().current_id, signing_keyring().current.public_key)"
    )
    result = _manage(
        "shell",
        "-c",
        code,
        **_production(
            AUDIT_CHAIN_KEY=None,
            AUDIT_CHAIN_KEY_FILE=str(chain_file),
            AUDIT_SIGNING_KEY=None,
            AUDIT_SIGNING_KEY_FILE=str(signing_file),
        ),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == public_key_of(signing)
    # a web host that only verifies checkpoints: the public key, no private key
    verify_only = _production(
        AUDIT_SIGNING_KEY=None, AUDIT_SIGNING_PUBLIC_KEY=public_key_of(signing)
    )
    result = _manage("check", **verify_only)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"AUDIT_CHAIN_KEY": "c2hvcnQ="}, "AUDIT_CHAIN_KEY must be 32 bytes"),
        ({"AUDIT_SIGNING_PUBLIC_KEY": "PLACEHOLDER"}, "is not the public half"),
        ({"AUDIT_SIGNING_KEY_FALLBACKS": "c2hvcnQ="}, "AUDIT_SIGNING_KEY_FALLBACKS[0] must be"),
    ],
)
def test_malformed_audit_keys_stop_the_start(overrides, problem):
    overrides = {k: generate_key() if v == "PLACEHOLDER" else v for k, v in overrides.items()}
    result = _manage("check", **_production(**overrides))
    assert result.returncode != 0
    assert "swrly.E007" in result.stderr
    assert problem in result.stderr


def _tls_server(tmp_path, name):
    """A TLS server on loopback whose self-signed certificate names only `name`; returns the
    port and the certificate's file (to trust it through SSL_CERT_FILE)."""
    import datetime
    import socket
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)

    def serve():
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], cert_file


def test_an_amqps_broker_must_present_a_certificate_for_its_host(tmp_path):
    # The certificate is trusted (SSL_CERT_FILE) but names another host: refused at the handshake.
    port, cert_file = _tls_server(tmp_path, "not-the-broker.example")
    code = (
        "import django; django.setup()\n"
        "from swrly.celery import app\n"
        "with app.connection_for_write() as conn:\n"
        "    conn.ensure_connection(max_retries=0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={
            **os.environ,
            "SWRLY_ENV_FILE": os.devnull,
            "DJANGO_SETTINGS_MODULE": "swrly.settings",
            "CELERY_BROKER_URL": f"amqps://swrly:secret@127.0.0.1:{port}/swrly",
            "SSL_CERT_FILE": str(cert_file),
        },
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode != 0
    assert "IP address mismatch" in result.stderr, result.stderr
