"""System checks that keep a misconfigured Swrly process from starting."""

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.management.base import SystemCheckError

STARTUP_TAG = "swrly_startup"

_HINTS = {
    "SECRET_KEY": "Set SECRET_KEY (or SECRET_KEY_FILE) to a long random value.",
    "BYOK_ENCRYPTION_KEY": (
        "Set BYOK_ENCRYPTION_KEY (or BYOK_ENCRYPTION_KEY_FILE) to 32 random bytes in urlsafe "
        "base64 (python -m swrly.devstack --generate-key prints one)."
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


def raise_on_startup_errors() -> None:
    """Run the start-up checks where Django does not (gunicorn, Celery workers)."""
    errors = [e for e in checks.run_checks(tags=[STARTUP_TAG]) if e.is_serious()]
    if errors:
        raise SystemCheckError("\n".join(str(e) for e in errors))
