from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import F, IntegerField, OuterRef, Subquery, Value, Window
from django.db.models.functions import Coalesce, Lead
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.access import scoped
from tenants.api.base import TenantViewSet
from tenants.api.pagination import NewestFirstPagination
from tenants.api.serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenSerializer,
    KeyRotationSerializer,
    MembershipCreatedSerializer,
    MembershipRoleSerializer,
    MembershipSerializer,
    MeSerializer,
    ProviderKeySerializer,
)
from tenants.models import (
    MANAGE_ROLES,
    ApiToken,
    KeyRotation,
    KeyRotationTenant,
    Membership,
    ProviderKey,
)
from tenants.services import (
    api_token_create,
    api_token_revoke,
    membership_add,
    membership_change_role,
    membership_remove,
)


def _refused(exc: DjangoValidationError) -> ValidationError:
    return ValidationError({"non_field_errors": exc.messages})


class MeView(APIView):
    """Who the presented token is: its tenant, name and role."""

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request.user).data)


class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, TenantViewSet
):
    """The tenant's API tokens (owners and admins). DELETE revokes; the row stays as history."""

    model = ApiToken
    serializer_class = ApiTokenSerializer
    pagination_class = NewestFirstPagination
    read_roles = MANAGE_ROLES
    write_roles = MANAGE_ROLES

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        return queryset.select_related("created_by")

    @extend_schema(responses={201: ApiTokenCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token, secret = api_token_create(
                tenant=self.tenant,
                name=serializer.validated_data["name"],
                role=serializer.validated_data["role"],
                actor=self.actor,
                acting_role=request.user.role,
                request=request,
            )
        except DjangoValidationError as exc:
            raise _refused(exc) from None
        token.secret = secret
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ApiTokenSerializer})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        token = api_token_revoke(token=self.get_object(), actor=self.actor, request=request)
        return Response(ApiTokenSerializer(token).data)


class MembershipViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    """The tenant's members (owners and admins). Only owners grant or remove the owner role."""

    model = Membership
    serializer_class = MembershipSerializer
    pagination_class = NewestFirstPagination
    read_roles = MANAGE_ROLES
    write_roles = MANAGE_ROLES
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        return queryset.select_related("user")

    @extend_schema(responses={201: MembershipCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            membership, password = membership_add(
                tenant=self.tenant,
                email=serializer.validated_data["user"]["username"],
                role=serializer.validated_data["role"],
                actor=self.actor,
                acting_role=request.user.role,
                request=request,
            )
        except DjangoValidationError as exc:
            raise _refused(exc) from None
        membership.one_time_password = password
        return Response(
            MembershipCreatedSerializer(membership).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=MembershipRoleSerializer, responses={200: MembershipSerializer})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = MembershipRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            membership = membership_change_role(
                membership=self.get_object(),
                role=serializer.validated_data["role"],
                actor=self.actor,
                acting_role=request.user.role,
                request=request,
            )
        except DjangoValidationError as exc:
            raise _refused(exc) from None
        return Response(MembershipSerializer(membership).data)

    def perform_destroy(self, instance: Membership) -> None:
        try:
            membership_remove(
                membership=instance,
                actor=self.actor,
                acting_role=self.request.user.role,
                request=self.request,
            )
        except DjangoValidationError as exc:
            raise _refused(exc) from None


class ProviderKeyViewSet(mixins.ListModelMixin, TenantViewSet):
    """The tenant's provider keys by fingerprint: first and last seen, uses, and successor."""

    model = ProviderKey
    serializer_class = ProviderKeySerializer
    pagination_class = None  # one row per key the tenant ever used: a short list

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        successor = Window(
            Lead("fingerprint"), partition_by=[F("provider")], order_by=F("first_seen_at").asc()
        )
        return queryset.annotate(replaced_by=successor).order_by("provider", "first_seen_at")


class KeyRotationViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The platform's encryption-key rotations, with how many of this tenant's tokens each
    rewrapped. Rotations are platform-wide records: no tenant owns them, and the platform-wide
    counts (which reveal other tenants' volume) are not shown."""

    serializer_class = KeyRotationSerializer
    pagination_class = None

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return KeyRotation.objects.none()
        in_tenant = (
            scoped(KeyRotationTenant, self.request.user.tenant)
            .filter(rotation=OuterRef("pk"))
            .values("rewrapped")[:1]
        )
        return KeyRotation.objects.annotate(
            rewrapped_in_tenant=Coalesce(Subquery(in_tenant, output_field=IntegerField()), Value(0))
        ).order_by("-started_at")
