from typing import Any, cast

from django.db.models import IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from swrly.custody.api.serializers import (
    BlockedKeyCreatedSerializer,
    BlockedKeyCreateSerializer,
    BlockedKeyFromKeySerializer,
    BlockedKeySerializer,
    FingerprintSaltSerializer,
    KeyRotationSerializer,
    ProviderKeySerializer,
)
from swrly.custody.models import BlockedKey, KeyRotation, KeyRotationTenant, ProviderKey
from swrly.custody.selectors import provider_keys_with_successor
from swrly.custody.services import (
    BlockedKeyExists,
    blocked_key_add,
    blocked_key_remove,
    fingerprint_salt,
)
from swrly.keys.fingerprint import FINGERPRINT_PATTERN, V2_PREFIX
from tenants.access import scoped
from tenants.api.authentication import TokenPrincipal
from tenants.api.base import TenantViewSet
from tenants.models import AUDIT_READ_ROLES, MANAGE_ROLES, READ_ROLES


class ProviderKeyViewSet(mixins.ListModelMixin, TenantViewSet):
    """The tenant's provider keys by fingerprint: first and last seen, uses, and successor."""

    model = ProviderKey
    serializer_class = ProviderKeySerializer
    pagination_class = None  # one row per key the tenant ever used: a short list

    @property
    def read_roles(self) -> frozenset[str]:
        # The salt lets its holder confirm a guessed key: the roles that read the audit log.
        return AUDIT_READ_ROLES if self.action == "salt" else READ_ROLES

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        given = self.request.query_params.get("fingerprint")
        if self.action == "list" and given is not None:
            value = given.strip().lower()
            if not FINGERPRINT_PATTERN.fullmatch(value):
                raise ValidationError(
                    {"fingerprint": ['"v2:" and 64 hex characters, or 64 hex characters']}
                )
            # Bare hex is a legacy fingerprint, or a v2 one given without its prefix.
            wanted = [value] if value.startswith(V2_PREFIX) else [value, V2_PREFIX + value]
            queryset = queryset.filter(fingerprint__in=wanted)
        return provider_keys_with_successor(queryset)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "fingerprint",
                {"type": "string", "pattern": "^([vV]2:)?[0-9a-fA-F]{64}$"},
                description="Only the key with this fingerprint (was it seen, and when?): "
                '"v2:" and 64 hex characters, or 64 hex characters (legacy, or v2 without '
                "its prefix). An empty list: never seen in this tenant.",
            )
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(responses=FingerprintSaltSerializer)
    @action(detail=False, methods=["get"])
    def salt(self, request: Request) -> Response:
        """The tenant's fingerprint salt, to compute a key's fingerprint locally."""
        salt = fingerprint_salt(tenant=self.tenant)
        return Response(
            FingerprintSaltSerializer(
                {"salt": salt.hex(), "version": 2, "message": "{provider}\\x00{key}"}
            ).data
        )


class BlockedKeyViewSet(
    mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, TenantViewSet
):
    """Keys the tenant registered as compromised: no run may present them. Everyone reads;
    owners and admins add and remove."""

    model = BlockedKey
    serializer_class = BlockedKeySerializer
    pagination_class = None  # a short list, kept by hand
    write_roles = MANAGE_ROLES
    http_method_names = ["get", "post", "delete", "head", "options"]
    extra_error_codes = {"create": ["409"], "from_key": ["409"]}

    def get_serializer_class(self) -> type:
        return {
            "create": BlockedKeyCreateSerializer,
            "from_key": BlockedKeyFromKeySerializer,
        }.get(self.action, BlockedKeySerializer)

    @extend_schema(request=BlockedKeyCreateSerializer, responses={201: BlockedKeyCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Block a key by its fingerprint."""
        serializer = BlockedKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return self._block(
            provider=data["provider"], fingerprint=data["fingerprint"], reason=data["reason"]
        )

    @extend_schema(
        request=BlockedKeyFromKeySerializer, responses={201: BlockedKeyCreatedSerializer}
    )
    @action(detail=False, methods=["post"], url_path="from-key")
    # The key arrives here: neither the serializer nor the key appear in an error report.
    @sensitive_variables("serializer", "data", "key")
    def from_key(self, request: Request) -> Response:
        """Block a key given itself: fingerprinted at once, never stored or logged."""
        serializer = BlockedKeyFromKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = data["key"]
        try:
            return self._block(provider=data["provider"], key=key, reason=data["reason"])
        finally:
            key.discard()

    def _block(self, **given: Any) -> Response:
        try:
            result = blocked_key_add(
                tenant=self.tenant, actor=self.actor, request=self.request, **given
            )
        except BlockedKeyExists as exc:
            raise BlockedKeyConflict(exc.messages[0]) from None
        blocked = result.blocked_key
        blocked.cancelled_runs = result.cancelled_runs  # type: ignore[attr-defined]
        return Response(BlockedKeyCreatedSerializer(blocked).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: BlockedKey) -> None:
        blocked_key_remove(blocked_key=instance, actor=self.actor, request=self.request)


class BlockedKeyConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "already_blocked"


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
