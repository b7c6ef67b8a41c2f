"""GET /api/v1/evidence/: the token's tenant's evidence bundle for a period, streamed."""

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request

from swrly.audit.models import AuditEvent
from swrly.evidence.bundle import EvidenceUnavailable, evidence_export, parse_period
from tenants.api.base import TenantViewSet
from tenants.models import AUDIT_READ_ROLES


class EvidenceUnavailableError(APIException):
    status_code = 503
    default_code = "evidence_unavailable"
    default_detail = "Evidence bundles cannot be signed on this host."


class ZipRenderer(renderers.BaseRenderer):
    media_type = "application/zip"
    format = "zip"
    charset = None

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        # The bundle streams its own body; this renders only an error, as JSON.
        return renderers.JSONRenderer().render(data)


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


class EvidenceViewSet(TenantViewSet):
    """The evidence bundle: one zip an auditor verifies offline (docs/evidence.md)."""

    model = AuditEvent
    read_roles = AUDIT_READ_ROLES
    renderer_classes = [renderers.JSONRenderer, ZipRenderer]
    pagination_class = None

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "from", OpenApiTypes.DATE, required=True, description="First day (UTC)."
            ),
            OpenApiParameter(
                "to", OpenApiTypes.DATE, required=True, description="Last day (UTC), inclusive."
            ),
        ],
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
        description="A zip of the tenant's audit events of the period (JSON Lines), the signed "
        "checkpoints covering them, the audit signing public keys, encryption-key rotations "
        "with this tenant's rewrap counts, provider-key fingerprint lineage, a runs summary "
        "per day, and a manifest of every file's SHA-256 signed with the audit signing key "
        "(Ed25519). Streamed; the export is audited (evidence.exported). Verify it with "
        "verify_evidence.py (docs/evidence.md).",
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> StreamingHttpResponse:
        params = request.query_params
        period = parse_period(params.get("from"), params.get("to"), _invalid)
        try:
            export = evidence_export(
                tenant=self.tenant, period=period, actor=self.actor, via="api", request=request
            )
        except EvidenceUnavailable as exc:
            raise EvidenceUnavailableError(str(exc)) from None
        response = StreamingHttpResponse(export.chunks, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        return response
