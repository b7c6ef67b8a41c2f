"""`/api/v1/policy/`: the token's tenant's policies (tenants/policy.py).

Owners, admins and auditors read; owners change them (PATCH, audited `tenant.policy_changed`).
"""

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from swrly.audit.writer import Actor
from swrly.web.serializers import StrictSerializerMixin
from tenants.models import AUDIT_READ_ROLES, OWNER_ROLES, Tenant
from tenants.policy import (
    PolicyInvalid,
    key_ttl,
    key_ttl_floor,
    platform_providers,
    tenant_policy_update,
)

_PROVIDERS_HELP = (
    "Providers this tenant's workflows may use, a subset of `platform_providers`; null: every "
    "one the platform enables."
)
_MODELS_HELP = (
    "Per provider, the models its steps may name: exact names, or a prefix ending in `*`. A "
    "provider without an entry may use any model."
)
_TTL_HELP = (
    "Seconds a run's stored keys live at most, from `key_ttl_min` to `platform_key_ttl`; null: "
    "the platform's."
)
_RETENTION_HELP = (
    "Days after a run's end when its input, prompts, outputs and error texts are purged; null: "
    "kept forever."
)


class PolicySerializer(serializers.Serializer):
    """The tenant's policies, and the platform's bounds they narrow."""

    allowed_providers = serializers.ListField(
        child=serializers.CharField(), allow_null=True, help_text=_PROVIDERS_HELP
    )
    allowed_models = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), help_text=_MODELS_HELP
    )
    max_key_ttl = serializers.IntegerField(allow_null=True, help_text=_TTL_HELP)
    retention_days = serializers.IntegerField(allow_null=True, help_text=_RETENTION_HELP)
    platform_providers = serializers.ListField(
        child=serializers.CharField(), help_text="The providers the operator enables."
    )
    effective_providers = serializers.ListField(
        child=serializers.CharField(),
        help_text="The providers this tenant's runs may use now: the platform's, narrowed.",
    )
    platform_key_ttl = serializers.IntegerField(help_text="The platform's BYOK_TOKEN_TTL.")
    key_ttl_min = serializers.IntegerField(help_text="The shortest `max_key_ttl` allowed.")
    key_ttl = serializers.IntegerField(
        help_text="Seconds the stored keys of this tenant's new runs live: the lower of both."
    )


class PolicyUpdateSerializer(StrictSerializerMixin, serializers.Serializer):
    """A change: only the fields given change; null sets a policy back to the platform's."""

    allowed_providers = serializers.ListField(
        child=serializers.CharField(), allow_null=True, required=False, help_text=_PROVIDERS_HELP
    )
    allowed_models = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField(trim_whitespace=False)),
        allow_null=True,
        required=False,
        help_text=_MODELS_HELP,
    )
    max_key_ttl = serializers.IntegerField(allow_null=True, required=False, help_text=_TTL_HELP)
    retention_days = serializers.IntegerField(
        allow_null=True, required=False, help_text=_RETENTION_HELP
    )


def policy_data(tenant: Tenant) -> dict[str, Any]:
    """The policy as the API and the settings page show it."""
    enabled = platform_providers()
    allowed = tenant.allowed_providers
    return {
        "allowed_providers": allowed,
        "allowed_models": tenant.allowed_models or {},
        "max_key_ttl": tenant.max_key_ttl,
        "retention_days": tenant.retention_days,
        "platform_providers": list(enabled),
        "effective_providers": [p for p in enabled if allowed is None or p in allowed],
        "platform_key_ttl": int(settings.BYOK_TOKEN_TTL),
        "key_ttl_min": key_ttl_floor(),
        "key_ttl": key_ttl(tenant),
    }


class PolicyView(APIView):
    """The token's tenant's policies: providers and models, key TTL, retention."""

    read_roles = AUDIT_READ_ROLES
    write_roles = OWNER_ROLES

    @property
    def tenant(self) -> Tenant:
        return self.request.user.tenant

    @extend_schema(responses=PolicySerializer)
    def get(self, request: Request) -> Response:
        return Response(PolicySerializer(policy_data(self.tenant)).data)

    @extend_schema(request=PolicyUpdateSerializer, responses=PolicySerializer)
    def patch(self, request: Request) -> Response:
        serializer = PolicyUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            tenant_policy_update(
                tenant=self.tenant,
                changes=serializer.validated_data,
                actor=Actor.for_token(request.auth),
                request=request,
            )
        except PolicyInvalid as exc:
            raise ValidationError(exc.errors) from None
        return Response(PolicySerializer(policy_data(self.tenant)).data)
