"""The identity app's API: members (added by invitation), invitations, the MFA policy."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from swrly.identity.api.serializers import InvitationSerializer, MfaPolicySerializer
from swrly.identity.models import Invitation, TenantMfaPolicy
from swrly.identity.services import (
    invitation_create,
    invitation_revoke,
    mfa_policy_set,
)
from swrly.web.pagination import KeysetPagination
from tenants.access import scoped
from tenants.api.base import TenantViewSet
from tenants.api.serializers import MembershipRoleSerializer, MembershipSerializer
from tenants.models import AUDIT_READ_ROLES, MANAGE_ROLES, OWNER_ROLES, Membership
from tenants.services import membership_change_role, membership_remove


def _refused(exc: DjangoValidationError) -> ValidationError:
    return ValidationError({"non_field_errors": exc.messages})


def _invite(view: TenantViewSet, request: Request) -> Response:
    serializer = InvitationSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    try:
        invitation = invitation_create(
            tenant=view.tenant,
            email=serializer.validated_data["email"],
            role=serializer.validated_data["role"],
            by=view.by,
            request=request,
        )
    except DjangoValidationError as exc:
        raise _refused(exc) from None
    return Response(InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED)


class MembershipViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    """The tenant's members (owners and admins). A POST invites: the person becomes a member
    when they accept the e-mailed link. Only owners grant or remove the owner role."""

    model = Membership
    serializer_class = MembershipSerializer
    pagination_class = KeysetPagination
    read_roles = MANAGE_ROLES
    write_roles = MANAGE_ROLES
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        return queryset.select_related("user")

    @extend_schema(request=InvitationSerializer, responses={201: InvitationSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return _invite(self, request)

    @extend_schema(request=MembershipRoleSerializer, responses={200: MembershipSerializer})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = MembershipRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            membership = membership_change_role(
                membership=self.get_object(),
                role=serializer.validated_data["role"],
                by=self.by,
                request=request,
            )
        except DjangoValidationError as exc:
            raise _refused(exc) from None
        return Response(MembershipSerializer(membership).data)

    def perform_destroy(self, instance: Membership) -> None:
        try:
            membership_remove(membership=instance, by=self.by, request=self.request)
        except DjangoValidationError as exc:
            raise _refused(exc) from None


class InvitationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    """The tenant's invitations (owners and admins); POST invites, DELETE revokes."""

    model = Invitation
    serializer_class = InvitationSerializer
    pagination_class = KeysetPagination
    read_roles = MANAGE_ROLES
    write_roles = MANAGE_ROLES
    http_method_names = ["get", "post", "delete", "head", "options"]

    @extend_schema(responses={201: InvitationSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return _invite(self, request)

    @extend_schema(responses={200: InvitationSerializer})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            invitation = invitation_revoke(
                invitation=self.get_object(), by=self.by, request=request
            )
        except DjangoValidationError as exc:
            raise _refused(exc) from None
        return Response(InvitationSerializer(invitation).data)


class MfaPolicyView(APIView):
    """Which roles of the token's tenant must use MFA: owners change it, admins and auditors
    read it."""

    read_roles = AUDIT_READ_ROLES
    write_roles = OWNER_ROLES
    http_method_names = ["get", "patch", "head", "options"]

    def _policy(self, request: Request) -> TenantMfaPolicy:
        tenant = request.user.tenant
        return scoped(TenantMfaPolicy, tenant).first() or TenantMfaPolicy(tenant=tenant)

    @extend_schema(responses={200: MfaPolicySerializer})
    def get(self, request: Request) -> Response:
        return Response(MfaPolicySerializer(self._policy(request)).data)

    @extend_schema(request=MfaPolicySerializer, responses={200: MfaPolicySerializer})
    def patch(self, request: Request) -> Response:
        serializer = MfaPolicySerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        roles = serializer.validated_data.get("required_roles")
        if roles is None:
            return Response(MfaPolicySerializer(self._policy(request)).data)
        try:
            policy = mfa_policy_set(
                tenant=request.user.tenant,
                required_roles=roles,
                by=request.user.principal,
                request=request,
            )
        except DjangoValidationError as exc:
            raise _refused(exc) from None
        return Response(MfaPolicySerializer(policy).data)
