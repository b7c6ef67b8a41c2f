"""The key-history page under /t/<tenant-slug>/keys/."""

from django.http import HttpRequest, HttpResponse

from swrly.custody.key_usage import encryption_key_usage
from swrly.custody.selectors import key_rotations, provider_key_history
from tenants.pages import TenantPageView


class KeyHistoryView(TenantPageView):
    """Encryption-key rotations and the tenant's provider keys by fingerprint."""

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self.page(
            "custody/key_history.html",
            rotations=key_rotations(tenant=self.tenant),
            provider_keys=provider_key_history(tenant=self.tenant),
            key_usage=encryption_key_usage(),
        )
