from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.api.base import TenantViewSet
from tenants.api.pagination import NewestFirstPagination
from tenants.api.serializers import ApiTokenSerializer, MeSerializer
from tenants.models import MANAGE_ROLES, ApiToken


class MeView(APIView):
    """Who the presented token is: its tenant, name and role."""

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request.user).data)


class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The tenant's API tokens (owners and admins)."""

    model = ApiToken
    serializer_class = ApiTokenSerializer
    pagination_class = NewestFirstPagination
    read_roles = MANAGE_ROLES
    write_roles = MANAGE_ROLES

    def filter_tenant_queryset(self, queryset):  # type: ignore[no-untyped-def]
        return queryset.select_related("created_by")
