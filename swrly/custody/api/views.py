from typing import Any, cast

from django.db.models import IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from rest_framework import mixins, viewsets

from swrly.custody.api.serializers import KeyRotationSerializer, ProviderKeySerializer
from swrly.custody.models import KeyRotation, KeyRotationTenant, ProviderKey
from swrly.custody.selectors import provider_keys_with_successor
from tenants.access import scoped
from tenants.api.authentication import TokenPrincipal
from tenants.api.base import TenantViewSet


class ProviderKeyViewSet(mixins.ListModelMixin, TenantViewSet):
    """The tenant's provider keys by fingerprint: first and last seen, uses, and successor."""

    model = ProviderKey
    serializer_class = ProviderKeySerializer
    pagination_class = None  # one row per key the tenant ever used: a short list

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        return provider_keys_with_successor(queryset)


class KeyRotationViewSet(mixins.ListModelMixin, viewsets.GenericViewSet[KeyRotation]):
    """The platform's encryption-key rotations, with how many of this tenant's tokens each
    rewrapped. Rotations are platform-wide records: no tenant owns them, and the platform-wide
    counts (which reveal other tenants' volume) are not shown."""

    serializer_class = KeyRotationSerializer
    pagination_class = None

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return KeyRotation.objects.none()
        in_tenant = (
            scoped(KeyRotationTenant, cast(TokenPrincipal, self.request.user).tenant)
            .filter(rotation=OuterRef("pk"))
            .values("rewrapped")[:1]
        )
        return KeyRotation.objects.annotate(
            rewrapped_in_tenant=Coalesce(Subquery(in_tenant, output_field=IntegerField()), Value(0))
        ).order_by("-started_at")
