"""The evidence pages under /t/<slug>/evidence/: the bundle download and the verifier."""

from pathlib import Path

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBadRequest, HttpResponseBase

from swrly.evidence import verify_evidence
from swrly.evidence.bundle import EvidenceUnavailable, evidence_export, parse_period
from tenants.models import AUDIT_READ_ROLES
from tenants.pages import TenantPageView


class _BadRange(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")


class EvidenceBundleView(TenantPageView):
    """The tenant's evidence bundle for ?from=…&to=… (the audit page's form), streamed."""

    allowed_roles = AUDIT_READ_ROLES

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponseBase:
        try:
            period = parse_period(request.GET.get("from"), request.GET.get("to"), _BadRange)
        except _BadRange as exc:
            return HttpResponseBadRequest(f"Invalid period, nothing exported. {exc}")
        try:
            export = evidence_export(
                tenant=self.tenant, period=period, actor=self.actor, via="page", request=request
            )
        except EvidenceUnavailable as exc:
            return HttpResponse(
                f"Evidence bundles cannot be signed here: {exc}",
                status=503,
                content_type="text/plain",
            )
        response = StreamingHttpResponse(export.chunks, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        return response


class VerifierDownloadView(TenantPageView):
    """The standalone verifier (one Python file), as a download."""

    allowed_roles = AUDIT_READ_ROLES

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponseBase:
        path = Path(verify_evidence.__file__)
        return FileResponse(
            path.open("rb"),
            as_attachment=True,
            filename="verify_evidence.py",
            content_type="text/x-python",
        )
