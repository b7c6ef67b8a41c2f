import json
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, renderers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from swrly.audit.export import audit_export
from swrly.audit.keys import signing_keyring
from swrly.audit.models import AuditEvent
from swrly.web.pagination import KeysetPagination
from tenants.api.base import TenantViewSet
from tenants.api.serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenSerializer,
    AuditEventSerializer,
    AuditKeysSerializer,
    ChainStatusSerializer,
    MeSerializer,
)
from tenants.filters import AuditFilterSet
from tenants.models import (
    AUDIT_READ_ROLES,
    MANAGE_ROLES,
    ApiToken,
)
from tenants.selectors import AUDIT_KEYSET, audit_chain_status, audit_events
from tenants.services import (
    api_token_create,
    api_token_revoke,
)

# The export is no list, so its parameters are not documented from the FilterSet by the
# schema generator: they are listed from it here.
AUDIT_FILTER_PARAMETERS = [
    OpenApiParameter(
        name,
        OpenApiTypes.DATE if name in ("from", "to") else str,
        description=str(audit_filter.extra.get("help_text", "")),
    )
    for name, audit_filter in AuditFilterSet.base_filters.items()
]


class AuditPagination(KeysetPagination):
    keyset = AUDIT_KEYSET


class JSONLinesRenderer(renderers.BaseRenderer):
    media_type = "application/jsonl"
    format = "jsonl"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        # The export streams its own body; this renders only an error, as one JSON line.
        return (json.dumps(data) + "\n").encode()


def _refused(exc: DjangoValidationError) -> ValidationError:
    return ValidationError({"non_field_errors": exc.messages})


class AuditKeysView(APIView):
    """The public keys that sign audit checkpoints, current and retired. Public: no token.

    A customer or auditor verifies checkpoints (and evidence) with these keys, without trusting
    anything else Swrly serves.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(responses=AuditKeysSerializer, auth=[])
    def get(self, request: Request) -> Response:
        keys = [
            {
                "key_id": key.key_id,
                "algorithm": "Ed25519",
                "status": key.status,
                "public_key": key.public_key,
                "public_key_pem": key.pem,
            }
            for key in signing_keyring().public.values()
        ]
        body = {
            "keys": keys,
            "checkpoint_payload": "canonical JSON (sorted keys, no spaces, ASCII) of type, v, "
            "chain, tenant, seq, head_hash, created_at, prev_signature, key_id",
        }
        return Response(AuditKeysSerializer(body).data)


class MeView(APIView):
    """Who the presented token is: its tenant, name and role."""

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request.user).data)


class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, TenantViewSet
):
    """The tenant's API tokens (owners and admins; auditors read). DELETE revokes; the row stays."""

    model = ApiToken
    serializer_class = ApiTokenSerializer
    pagination_class = KeysetPagination
    read_roles = AUDIT_READ_ROLES
    write_roles = MANAGE_ROLES

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        return queryset.select_related("created_by", "created_by_token")

    @extend_schema(responses={201: ApiTokenCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token, secret = api_token_create(
                tenant=self.tenant,
                name=serializer.validated_data["name"],
                role=serializer.validated_data["role"],
                by=self.by,
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


class AuditEventViewSet(mixins.ListModelMixin, TenantViewSet):
    """The tenant's audit log: the filters of the audit page, a chain check, a streamed export."""

    model = AuditEvent
    serializer_class = AuditEventSerializer
    pagination_class = AuditPagination
    filterset_class = AuditFilterSet
    read_roles = AUDIT_READ_ROLES

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        # audit_events starts from the same tenant-bound queryset (tenants.access).
        return audit_events(tenant=self.tenant)

    @extend_schema(responses=ChainStatusSerializer)
    @action(detail=False, methods=["get"])
    def verify(self, request: Request) -> Response:
        report = audit_chain_status(tenant=self.tenant)
        return Response(ChainStatusSerializer(ChainStatusSerializer.from_report(report)).data)

    @extend_schema(
        parameters=AUDIT_FILTER_PARAMETERS,
        responses={(200, "application/jsonl"): OpenApiTypes.STR},
        description="The filtered events as JSON Lines, oldest first, streamed; the export "
        "itself is audited (audit.exported) and holds the events recorded before it.",
    )
    @action(
        detail=False, methods=["get"], renderer_classes=[renderers.JSONRenderer, JSONLinesRenderer]
    )
    def export(self, request: Request) -> StreamingHttpResponse:
        filters = AuditFilterSet(
            request.query_params, self.get_queryset(), request=request, tenant=self.tenant
        )
        if not filters.is_valid():
            raise ValidationError(filters.errors)
        return audit_export(
            tenant=self.tenant,
            events=filters.qs,
            export_format="jsonl",
            filters=filters.as_metadata(),
            actor=self.actor,
            request=request,
            via="api",
            stamped=False,
        )
