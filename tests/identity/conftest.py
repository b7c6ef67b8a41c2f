"""Helpers for the identity tests: invitations made through the service, real TOTP codes."""

import time

from django.core import mail
from django_otp.oath import hotp

from swrly.identity.models import Invitation
from swrly.identity.services import invitation_create
from tenants.authority import Principal
from tenants.models import Membership, Role


def invite(world, email: str, role: str = Role.DEVELOPER, by_role: str = Role.OWNER) -> Invitation:
    """An invitation of the world's tenant, made by its owner (or `by_role`) on the page."""
    user = world.users[by_role]
    by = Principal.member(Membership.objects.get(tenant=world.tenant, user=user), user=user)
    return invitation_create(tenant=world.tenant, email=email, role=role, by=by)


def last_invitation_link(email: str) -> str:
    """The accept link of the newest invitation e-mail sent to `email`."""
    sent = [m for m in mail.outbox if email in m.to]
    assert sent, f"no invitation e-mail to {email}"
    (link,) = [line for line in sent[-1].body.splitlines() if "/invitations/" in line]
    return link.strip()


def totp_code(device, offset: int = 0) -> str:
    """The RFC 6238 code of a django-otp TOTPDevice now (time-machine's now in a travel),
    `offset` time steps away: HOTP of the step counter, computed here from the device secret."""
    counter = int((time.time() - device.t0) // device.step) + offset
    return f"{hotp(device.bin_key, counter, digits=device.digits):0{device.digits}d}"
