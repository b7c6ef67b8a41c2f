"""Who acts, and with what authority: a member on a page, an API token, or the console.

A token carries at most the authority of the person behind it, as that person holds it *now*:
its role must stay within its creator's current role (`tenants.models.role_within`), and the
token it was created with (if any) must still be active. Tokens that stem from the command line
have no person behind them: the operator at the console is their root of trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied

from swrly.audit.writer import Actor
from tenants.models import ApiToken, Membership, Role, TokenOrigin, role_within


class AuthorityLost(PermissionDenied):
    """The acting member or token no longer holds the authority it acted with."""


@dataclass(frozen=True)
class Principal:
    """The acting party as services check it.

    `role` is the authority it acts with (services check it again, under lock, before they
    rely on it); `user_id` the person behind it (None for the console and for tokens that stem
    from it); `token` the API token it acts through, if any.
    """

    actor: Actor
    role: str
    via: str
    user_id: int | None = None
    token: ApiToken | None = None

    @classmethod
    def member(cls, membership: Membership, *, user: Any) -> Principal:
        """The signed-in `user` acting on the tenant's pages through their membership."""
        return cls(
            actor=Actor.for_user(user), role=membership.role, via=TokenOrigin.PAGE, user_id=user.pk
        )

    @classmethod
    def for_token(cls, token: ApiToken) -> Principal:
        """An API token acting with its own role, for the person behind it."""
        return cls(
            actor=Actor.for_token(token),
            role=token.role,
            via=TokenOrigin.API,
            user_id=token.created_by_id,
            token=token,
        )

    @classmethod
    def console(cls, command: str) -> Principal:
        """The operator running a management command: the root of trust, an owner's authority."""
        return cls(actor=Actor.system(command), role=Role.OWNER, via=TokenOrigin.CLI)


def token_authority_refusal(
    token: ApiToken, *, creator_role: str | None, parent: ApiToken | None
) -> str:
    """Why `token` no longer holds the authority for its role, or "" when it does.

    `creator_role` is the current role of `token.created_by` in the token's tenant (None when
    they are no member); `parent` is `token.created_by_token` as it is now. Only the direct
    parent is checked: revoking a token revokes every token created with it, in the same
    transaction, so an active parent means an active chain.
    """
    if token.created_by_token_id is not None:
        if parent is None or parent.revoked_at is not None:
            return "the token it was created with is revoked"
        if not role_within(token.role, parent.role):
            return f"the token it was created with has role {parent.role}"
    if token.created_by_id is not None:
        if creator_role is None:
            return "its creator is no longer a member of the tenant"
        if not role_within(token.role, creator_role):
            return f"its creator's role is now {creator_role}"
    elif token.created_via == TokenOrigin.PAGE or (
        token.created_via == TokenOrigin.API and token.created_by_token_id is None
    ):
        return "it has no creator"
    return ""
