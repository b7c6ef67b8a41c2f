"""`/api/v1/audit-webhooks/`: a tenant's audit webhooks and their delivery state.

Owners, admins and auditors read; owners create and delete. The secret is in the creation's
answer only.
"""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from swrly.audit.models import AuditWebhook
from swrly.audit.webhook_policy import MAX_URL_LENGTH
from swrly.audit.webhooks import webhook_state
from swrly.web.serializers import StrictSerializerMixin
from tenants.api.base import TenantViewSet
from tenants.models import AUDIT_READ_ROLES, OWNER_ROLES
from tenants.webhooks import audit_webhook_create, audit_webhook_delete


class AuditWebhookSerializer(serializers.ModelSerializer):
    url = serializers.CharField(
        source="url_display", help_text="The receiver's URL; a query string is shown as `?…`."
    )
    secret_prefix = serializers.CharField(help_text="The first characters of the secret.")
    delivered_seq = serializers.IntegerField(
        help_text="The last event the receiver acknowledged (2xx); 0 before the first."
    )
    head_seq = serializers.SerializerMethodField(help_text="The newest event of the chain.")
    lag_events = serializers.SerializerMethodField(help_text="Events not delivered yet.")
    lag_seconds = serializers.SerializerMethodField(
        help_text="How long the oldest event not delivered yet has waited (0 when none)."
    )
    last_status = serializers.IntegerField(
        allow_null=True, help_text="HTTP status of the last answer; null when none came."
    )
    last_error = serializers.CharField(
        help_text="Why the last attempt failed; empty after a success."
    )
    failures = serializers.IntegerField(help_text="Failed attempts in a row.")
    next_attempt_at = serializers.DateTimeField(
        allow_null=True, help_text="When the next retry is due; null: at the next round."
    )

    class Meta:
        model = AuditWebhook
        fields = [
            "id",
            "url",
            "secret_prefix",
            "created_at",
            "created_by",
            "delivered_seq",
            "delivered_event_at",
            "head_seq",
            "lag_events",
            "lag_seconds",
            "last_attempt_at",
            "last_success_at",
            "last_status",
            "last_error",
            "failures",
            "next_attempt_at",
        ]
        read_only_fields = fields

    def _state(self, webhook: AuditWebhook) -> Any:
        cache = self.context.setdefault("states", {})
        if webhook.pk not in cache:
            cache[webhook.pk] = webhook_state(webhook)
        return cache[webhook.pk]

    def get_head_seq(self, webhook: AuditWebhook) -> int:
        return self._state(webhook).head_seq

    def get_lag_events(self, webhook: AuditWebhook) -> int:
        return self._state(webhook).lag_events

    def get_lag_seconds(self, webhook: AuditWebhook) -> int:
        return self._state(webhook).lag_seconds


class AuditWebhookCreateSerializer(StrictSerializerMixin, serializers.Serializer):
    url = serializers.CharField(
        max_length=MAX_URL_LENGTH,
        help_text="https:// URL of the receiver, allowed by the operator's webhook policy.",
    )


class AuditWebhookCreatedSerializer(AuditWebhookSerializer):
    """A webhook just created: the only answer that carries its secret."""

    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret (HMAC-SHA256 in Swrly-Signature). Shown once.",
    )

    class Meta(AuditWebhookSerializer.Meta):
        fields = [*AuditWebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class AuditWebhookViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    TenantViewSet,
):
    """The tenant's audit webhooks: each receives the whole audit chain, signed, in order."""

    model = AuditWebhook
    serializer_class = AuditWebhookSerializer
    read_roles = AUDIT_READ_ROLES
    write_roles = OWNER_ROLES

    def filter_tenant_queryset(self, queryset: Any) -> Any:
        return queryset.order_by("created_at", "id")

    @extend_schema(
        request=AuditWebhookCreateSerializer, responses={201: AuditWebhookCreatedSerializer}
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = AuditWebhookCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            webhook, secret = audit_webhook_create(
                tenant=self.tenant,
                url=serializer.validated_data["url"],
                by=self.by,
                request=request,
            )
        except DjangoValidationError as exc:
            raise ValidationError({"url": exc.messages}) from None
        webhook.secret = secret
        return Response(AuditWebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: AuditWebhook) -> None:
        audit_webhook_delete(webhook=instance, by=self.by, request=self.request)
