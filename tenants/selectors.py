"""Reads of tenant data: memberships and API tokens, the audit log.

Everything after api_token_for_secret() is bound to one tenant through tenants.access.scoped().
"""

from __future__ import annotations

from datetime import UTC, date

from django.contrib.auth.models import User
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import TruncDate

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
