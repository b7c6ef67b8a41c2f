"""Reads of tenant data: memberships and API tokens, the audit log.

Everything after api_token_for_secret() is bound to one tenant through tenants.access.scoped().
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from swrly.audit.models import AuditEvent
from swrly.audit.verifier import ChainReport, audit_verify_chain
from swrly.audit.writer import chain_for
from swrly.web.filters import day_start
from swrly.web.pagination import Cursor, Keyset, KeysetPage, keyset_page
from tenants.access import scoped
from tenants.models import ApiToken, Membership, Tenant
from tenants.tokens import token_matches, token_prefix


def memberships_for_user(user: User) -> list[Membership]:
    """The user's memberships across tenants, with each tenant loaded."""
    return list(
        Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__slug")
    )


def api_token_for_secret(presented: str) -> ApiToken | None:
    """The token this secret belongs to (revoked or not), or None: one query.

    The tenant comes from the token; the caller refuses a revoked one, and one without the
    authority for its role. For that check the token comes with the token it was created with
    (`created_by_token`) and its creator's current role in the tenant (`creator_role`, None when
    they are no member).
    """
    prefix = token_prefix(presented)
    if prefix is None:
        return None
    creator_role = Membership.objects.filter(
        tenant=OuterRef("tenant_id"), user=OuterRef("created_by_id")
    ).values("role")[:1]
    token = (
        ApiToken.objects.select_related("tenant", "created_by_token")
        .annotate(creator_role=Subquery(creator_role))
        .filter(prefix=prefix)
        .first()
    )
    if token is None or not token_matches(presented, token.digest):
        return None
    return token


# --- Audit log -------------------------------------------------------------------------------

AUDIT_PAGE_SIZE = 50
# The audit log's order, newest first: the chain's sequence numbers.
AUDIT_KEYSET = Keyset("seq")


def audit_events(*, tenant: Tenant) -> QuerySet[AuditEvent]:
    """The tenant's audit events (not yet filtered or ordered).

    The chain filter repeats the tenant filter (a tenant's events are exactly its chain) so
    that the unique (chain, seq) index serves ordering and keyset paging by seq.
    """
    return scoped(AuditEvent, tenant).filter(chain=chain_for(tenant))


def audit_event_page(
    *, events: QuerySet[AuditEvent], cursor: Cursor | None, size: int = AUDIT_PAGE_SIZE
) -> KeysetPage[AuditEvent]:
    """One page of `events` (the tenant's, filtered), newest first, past `cursor`: one query."""
    return keyset_page(events, AUDIT_KEYSET, cursor, size)


def audit_chain_status(*, tenant: Tenant) -> ChainReport:
    """The tenant's chain, verified from its newest signed checkpoint onward.

    Cost: the checkpoints' signatures (two queries; each signature is checked once per process
    and then remembered) plus the events after the newest checkpoint (read 2,000 per query), so it
    grows with the events since the last checkpoint (one AUDIT_CHECKPOINT_INTERVAL of activity),
    not with the whole chain. `manage.py verify-audit --full` re-verifies everything.
    """
    return audit_verify_chain(chain_for(tenant), full=False)


def key_events_per_day(*, tenant: Tenant, since: date) -> dict[tuple[date, str], int]:
    """`key.*` audit events per UTC day and action since `since`: one grouped query."""
    rows = (
        scoped(AuditEvent, tenant)
        .filter(
            chain=chain_for(tenant), action__startswith="key.", created_at__gte=day_start(since)
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "action")
        .annotate(n=Count("pk"))
        .order_by("day", "action")
    )
    return {(row["day"], row["action"]): row["n"] for row in rows}


def recent_audit_events(*, tenant: Tenant, limit: int = 10) -> list[AuditEvent]:
    """The tenant's newest audit events."""
    return list(scoped(AuditEvent, tenant).filter(chain=chain_for(tenant)).order_by("-seq")[:limit])


def tenant_facts(*, tenant: Tenant) -> dict[str, int]:
    """Member and active API-token counts: two counting queries."""
    return {
        "member_count": scoped(Membership, tenant).count(),
        "active_token_count": scoped(ApiToken, tenant).filter(revoked_at=None).count(),
    }


@dataclass(frozen=True)
class Lockout:
    """A member whose sign-in from one address is locked (django-axes), and until when."""

    membership: Membership
    ip_address: str | None
    failures: int
    last_attempt_at: datetime
    locked_until: datetime | None  # None: until someone unlocks it (no AXES_COOLOFF_TIME)


def locked_out_members(*, tenant: Tenant) -> list[Lockout]:
    """The tenant's members whose sign-in is locked now, one row per locked address.

    django-axes counts failures per (username, address) pair (AXES_LOCKOUT_PARAMETERS) within
    the cool-off: a pair at AXES_FAILURE_LIMIT or more is refused until the cool-off after its
    last failure has passed. Only usernames of this tenant's members are looked up.
    """
    limit = settings.AXES_FAILURE_LIMIT
    if not isinstance(limit, int):  # a callable limit depends on the request: not known here
        return []
    members = {m.user.get_username(): m for m in scoped(Membership, tenant).select_related("user")}
    if not members:
        return []
    cooloff = get_cool_off()
    attempts = AccessAttempt.objects.filter(username__in=list(members))
    if cooloff is not None:
        attempts = attempts.filter(attempt_time__gte=timezone.now() - cooloff)
    rows = (
        attempts.values("username", "ip_address")
        .annotate(failures=Sum("failures_since_start"), last=Max("attempt_time"))
        .filter(failures__gte=limit)
        .order_by("username", "ip_address")
    )
    return [
        Lockout(
            membership=members[row["username"]],
            ip_address=row["ip_address"],
            failures=row["failures"],
            last_attempt_at=row["last"],
            locked_until=row["last"] + cooloff if cooloff is not None else None,
        )
        for row in rows
    ]
