"""The base every tenant-scoped API viewset derives from.

The tenant comes from the Bearer token, never from the URL or the body. `get_queryset` is
sealed: a subclass narrows the tenant-bound queryset in `filter_tenant_queryset`, so a view
cannot reach another tenant's rows by forgetting a filter.
"""

from typing import Any, ClassVar

from django.db.models import Model, QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import viewsets

from swrly.audit.writer import Actor
from tenants.access import get_for_tenant, scoped
from tenants.authority import Principal
from tenants.models import Tenant


class TenantFilterBackend(DjangoFilterBackend):
    """The view's `filterset_class` (a tenants.filters.TenantFilterSet) over its tenant's rows.

    An invalid value is a 400 naming the parameter.
    """

    def get_filterset_kwargs(self, request: Any, queryset: Any, view: Any) -> dict[str, Any]:
        return {**super().get_filterset_kwargs(request, queryset, view), "tenant": view.tenant}


class TenantViewSet(viewsets.GenericViewSet):
    model: ClassVar[type[Model]]
    filter_backends = [TenantFilterBackend]
    lookup_field = "pk"
    # Any path segment reaches get_object(), so a malformed id gets the same audited JSON 404
    # as an unknown one (the router's default pattern would leave it to Django's 404 page).
    lookup_value_regex = "[^/]+"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for sealed in ("get_queryset", "get_object"):
            if sealed in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} overrides {sealed}(); narrow the tenant-bound queryset "
                    "in filter_tenant_queryset() instead"
                )

    @property
    def tenant(self) -> Tenant:
        return self.request.user.tenant

    @property
    def actor(self) -> Actor:
        return Actor.for_token(self.request.auth)

    @property
    def by(self) -> Principal:
        """The token as services check its authority."""
        return self.request.user.principal

    def filter_tenant_queryset(self, queryset: QuerySet) -> QuerySet:
        return queryset

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # schema generation has no token
            return self.model._default_manager.none()
        return self.filter_tenant_queryset(scoped(self.model, self.tenant))

    def get_object(self) -> Model:
        obj = get_for_tenant(
            self.model,
            tenant=self.tenant,
            pk=self.kwargs[self.lookup_url_kwarg or self.lookup_field],
            actor=self.actor,
            request=self.request,
            queryset=self.get_queryset(),
        )
        self.check_object_permissions(self.request, obj)
        return obj
