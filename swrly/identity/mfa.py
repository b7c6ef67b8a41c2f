"""Second factors on django-otp's devices: one TOTP device and one set of recovery codes.

Recovery codes are shown once and stored only as keyed hashes in StaticToken rows (django-otp
stores static tokens as given, so it is given the hash): the database never holds a usable code.
A StaticToken is deleted when used, which makes each code single-use.
"""

import base64
import hashlib
import hmac
import secrets

from django.conf import settings
from django.contrib.auth.models import User
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

RECOVERY_CODE_COUNT = 10
_RECOVERY_SALT = b"swrly.recovery-code.v1"
# Values of SESSION_KEY: how the session's sign-in was verified.
SESSION_KEY = "swrly_mfa"
VERIFIED_BY_TOTP = "totp"
VERIFIED_BY_RECOVERY_CODE = "recovery_code"
NO_SECOND_FACTOR = "none"


def _normalise(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def recovery_code_digest(code: str) -> str:
    """The 16-character keyed hash a recovery code is stored as (StaticToken.token)."""
    key = hmac.new(settings.SECRET_KEY.encode(), _RECOVERY_SALT, hashlib.sha256).digest()
    mac = hmac.new(key, _normalise(code).encode(), hashlib.sha256).digest()
    return base64.b32encode(mac).decode()[:16].lower()


def recovery_codes_generate() -> list[str]:
    """Fresh codes as shown to the user: 10 characters (50 bits) each, `xxxxx-xxxxx`."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def recovery_codes_store(user: User, codes: list[str]) -> None:
    """Replace the user's recovery codes with the hashes of `codes`."""
    device, _ = StaticDevice.objects.get_or_create(
        user=user, name="recovery", defaults={"confirmed": True}
    )
    device.token_set.all().delete()
    StaticToken.objects.bulk_create(
        StaticToken(device=device, token=recovery_code_digest(code)) for code in codes
    )


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__name="recovery").count()


def totp_device(user: User) -> TOTPDevice | None:
    """The user's confirmed authenticator-app device, if enrolled."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def has_second_factor(user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def totp_secret_base32(device: TOTPDevice) -> str:
    """The device's secret as authenticator apps take it when typed in."""
    return base64.b32encode(device.bin_key).decode().rstrip("=")


def looks_like_totp(code: str) -> bool:
    code = code.strip().replace(" ", "")
    return len(code) == 6 and code.isdigit()
