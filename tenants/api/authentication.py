"""Bearer API-token authentication: the token names the tenant and the role."""

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from swrly.audit.writer import Actor
from tenants.access import access_denied
from tenants.authority import Principal, token_authority_refusal
from tenants.models import ApiToken, Tenant
from tenants.selectors import api_token_for_secret
from tenants.services import api_token_mark_used, api_token_refuse


@dataclass(frozen=True)
class TokenPrincipal:
    """`request.user` for an API call: the token acts for its tenant with its role."""

    token: ApiToken

    is_authenticated = True
    is_anonymous = False

    @property
    def principal(self) -> Principal:
        """The token as services check authority: its role, for the person behind it."""
        return Principal.for_token(self.token)

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
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <API token>'.")
        token = api_token_for_secret(presented.strip())
        if token is not None and not token.is_active:
            # A revoked token still in use is worth a security team's attention.
            access_denied(
                tenant=token.tenant,
                actor=Actor.for_token(token),
                target=f"token:{token.pk}",
                reason="revoked token presented",
                request=request,
            )
        if token is None or not token.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        refusal = token_authority_refusal(
            token, creator_role=token.creator_role, parent=token.created_by_token
        )
        if refusal:
            # Its creator no longer holds the authority for its role (defence in depth: a
            # member's removal or demotion revokes such tokens when it happens).
            api_token_refuse(token=token, refusal=refusal, request=request)
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        api_token_mark_used(token)
        return TokenPrincipal(token), token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the Bearer token in the OpenAPI schema."""

    target_class = ApiTokenAuthentication
    name = "ApiToken"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (`swr_…`) created on the API tokens page, over the "
            "API, or with `manage.py create-api-token`. It names the tenant and the role, and "
            "acts with at most its creator's current role.",
        }
