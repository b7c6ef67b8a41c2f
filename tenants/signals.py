"""Audit sign-ins, failed sign-ins and lockouts in every tenant the user belongs to.

Failed sign-ins and lockouts can be caused by anyone who knows a member's e-mail address, so
they are recorded within the flood bound (swrly.audit.writer.audit_record_bounded).
"""

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils.crypto import salted_hmac

from swrly.audit.writer import Actor, audit_record, audit_record_bounded
from tenants.models import Tenant


def audit_user_event(
    *,
    action: str,
    user: Any,
    request: HttpRequest | None,
    metadata: dict | None = None,
    bounded: bool = False,
) -> None:
    """Audit something done to a user's account, in each of their tenants. `bounded`: an
    attempt anyone could make (a wrong second factor after a right password), recorded within
    the flood bound and as `anonymous`."""
    _audit_auth(
        action=action,
        user=user,
        username=user.get_username(),
        request=request,
        metadata=metadata or {},
        bounded=bounded,
    )


def _audit_auth(
    *,
    action: str,
    user: Any,
    username: str,
    request: HttpRequest | None,
    metadata: dict,
    bounded: bool = False,
) -> None:
    tenants: list[Tenant | None] = []
    if user is not None:
        tenants = [m.tenant for m in user.memberships.select_related("tenant")]
    # A failed sign-in is made by whoever typed the name, not by the member it names.
    actor = Actor.for_user(user) if user is not None and not bounded else Actor.anonymous()
    record = audit_record_bounded if bounded else audit_record
    with transaction.atomic():
        for tenant in tenants or [None]:
            record(
                tenant=tenant,
                action=action,
                actor=actor,
                target=f"user:{username[:150]}",
                metadata=metadata,
                request=request,
            )


def _user_named(username: str) -> Any:
    return get_user_model().objects.filter(username=username).first() if username else None


@receiver(user_logged_in)
def audit_login(sender: Any, request: HttpRequest, user: Any, **_: Any) -> None:
    audit_user_event(action="auth.login", user=user, request=request)


@receiver(user_logged_out)
def audit_logout(sender: Any, request: HttpRequest, user: Any, **_: Any) -> None:
    if user is not None:
        audit_user_event(action="auth.logout", user=user, request=request)


def _username_label(username: str, user: Any) -> str:
    """A known user's name; for an unknown one, a keyed hash (a password typed into the
    username field must not be kept forever in an append-only log)."""
    if user is not None:
        return username
    digest = salted_hmac("swrly.audit.unknown-username", username, algorithm="sha256")
    return f"unknown#{digest.hexdigest()[:16]}"


@receiver(user_login_failed)
def audit_login_failed(
    sender: Any, credentials: dict, request: HttpRequest | None = None, **_: Any
) -> None:
    username = str(credentials.get("username", ""))[:150]
    user = _user_named(username)
    # The actor is `anonymous` (and the event's `ip` the client address): whoever typed the name,
    # not the member it names. The name is kept as typed for a member, hashed otherwise; the
    # password never reaches the log.
    label = _username_label(username, user)
    _audit_auth(
        action="auth.login_failed",
        user=user,
        username=label,
        request=request,
        metadata={"known_user": user is not None, "attempted_username": label},
        bounded=True,
    )


@receiver(user_locked_out)
def audit_locked_out(
    sender: Any, request: HttpRequest, username: str | None = None, **_: Any
) -> None:
    username = (username or "")[:150]
    user = _user_named(username)
    label = _username_label(username, user)
    _audit_auth(
        action="auth.locked_out",
        user=user,
        username=label,
        request=request,
        metadata={"attempted_username": label},
        bounded=True,
    )
