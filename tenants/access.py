"""The one place tenant-bound querysets and object lookups come from.

Views and API viewsets never query a tenant-owned model directly: they call `scoped()` or
`get_for_tenant()` here (a test fails if they do). A lookup outside the tenant answers the same
404 as an unknown id, and the denial is written to the audit log.
"""

from typing import Any, TypeVar

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from swrly.audit.writer import Actor, audit_record_bounded
from tenants.models import Membership, Tenant

M = TypeVar("M", bound=Model)


def scoped(model: type[M], tenant: Tenant) -> QuerySet[M]:
    """Every row of `model` that belongs to `tenant`, and nothing else."""
    return model._default_manager.filter(tenant=tenant)


def access_denied(
    *,
    tenant: Tenant | None,
    actor: Actor,
    target: str,
    reason: str,
    request: HttpRequest | None,
) -> None:
    """Audit a refused access (the caller then answers 404 or 403), within the flood bound."""
    audit_record_bounded(
        tenant=tenant,
        action="access.denied",
        actor=actor,
        target=target[:300],
        metadata={"reason": reason, "path": request.path[:300] if request else ""},
        request=request,
    )


def get_for_tenant(
    model: type[M],
    *,
    tenant: Tenant,
    pk: Any,
    actor: Actor,
    request: HttpRequest | None = None,
    queryset: QuerySet[M] | None = None,
) -> M:
    """The tenant's object with this id; otherwise 404, the same for unknown and foreign ids."""
    qs = queryset if queryset is not None else scoped(model, tenant)
    try:
        return qs.get(pk=pk)
    except (ObjectDoesNotExist, ValidationError, ValueError, TypeError):
        # Unknown, foreign, or not even an id of the right shape: all answer alike.
        pass
    access_denied(
        tenant=tenant,
        actor=actor,
        target=f"{model._meta.label_lower}:{str(pk)[:64]}",
        reason="not found in tenant",
        request=request,
    )
    raise Http404


def membership_for_request(*, request: HttpRequest, slug: str) -> Membership:
    """The signed-in user's membership in the tenant with this slug; otherwise audited 404."""
    membership = (
        Membership.objects.select_related("tenant")
        .filter(tenant__slug=slug, user=request.user.pk)
        .first()
    )
    if membership is not None:
        return membership
    access_denied(
        tenant=Tenant.objects.filter(slug=slug).first(),
        actor=Actor.for_user(request.user),
        target=f"tenant:{slug[:64]}",
        reason="not a member",
        request=request,
    )
    raise Http404
