"""Bearer API-token authentication: the token names the tenant and the role."""

from dataclasses import dataclass

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tenants.models import ApiToken, Tenant
from tenants.tokens import token_matches, token_prefix


@dataclass(frozen=True)
class TokenPrincipal:
    """`request.user` for an API call: the token acts for its tenant with its role."""

    token: ApiToken

    is_authenticated = True
    is_anonymous = False

    @property
    def tenant(self) -> Tenant:
        return self.token.tenant

    @property
    def role(self) -> str:
        return self.token.role

    def __str__(self) -> str:
        return f"token {self.token.display_prefix}"


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[TokenPrincipal, ApiToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, presented = header.partition(" ")
        if not header:
            return None
        if scheme.lower() != "bearer" or not presented.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
        presented = presented.strip()
        prefix = token_prefix(presented)
        token = (
            ApiToken.objects.select_related("tenant").filter(prefix=prefix).first()
            if prefix
            else None
        )
        if token is None or not token_matches(presented, token.digest) or not token.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        now = timezone.now()
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
        return TokenPrincipal(token), token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
