from typing import Any

from rest_framework import serializers

from swrly.audit.models import AuditEvent
from swrly.web.serializers import StrictSerializerMixin
from tenants.models import ApiToken, Membership, Role, TokenOrigin


class MeSerializer(serializers.Serializer):
    tenant = serializers.SlugField(source="token.tenant.slug")
    token_name = serializers.CharField(source="token.name")
    role = serializers.CharField(source="token.role")


class ApiTokenSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    prefix = serializers.CharField(source="display_prefix", read_only=True)
    created_by = serializers.CharField(
        source="created_by.username",
        default=None,
        read_only=True,
        allow_null=True,
        help_text="The person whose authority the token carries: who created it on the tokens "
        "page, or the person behind the token that created it. Null only for tokens that stem "
        "from the command line.",
    )
    created_by_token = serializers.PrimaryKeyRelatedField(
        read_only=True,
        allow_null=True,
        help_text="The token this one was created with (over the API), or null.",
    )
    created_via = serializers.ChoiceField(
        choices=TokenOrigin.choices,
        read_only=True,
        help_text="page: the API tokens page; api: by another token; cli: "
        "`manage.py create-api-token` (no member behind it).",
    )
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "role",
            "prefix",
            "created_by",
            "created_by_token",
            "created_via",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]
        read_only_fields = [
            "id",
            "prefix",
            "created_by",
            "created_by_token",
            "created_via",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    """A token just created: the only answer that carries its secret."""

    secret = serializers.CharField(read_only=True, help_text="Shown once; Swrly keeps no copy.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "secret"]


class MembershipSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    email = serializers.EmailField(source="user.username")
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["id", "email", "role", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]


class MembershipRoleSerializer(StrictSerializerMixin, serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "created_at",
            "actor",
            "action",
            "target",
            "metadata",
            "ip",
            "user_agent",
            "prev_hash",
            "hash",
            "hash_version",
            "key_id",
        ]
        read_only_fields = fields


class ChainStatusSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="True when every event of the chain verifies.")
    checked = serializers.IntegerField(help_text="Events verified before the first break.")
    broken_seq = serializers.IntegerField(allow_null=True)
    broken_event_id = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
    mode = serializers.ChoiceField(
        choices=["incremental", "full"],
        help_text="incremental: events from the newest signed checkpoint on; full: every event.",
    )
    verified_from_seq = serializers.IntegerField(
        allow_null=True, help_text="First event whose hash was recomputed."
    )
    verified_to_seq = serializers.IntegerField(
        allow_null=True, help_text="Last event whose hash was recomputed."
    )
    checkpoints_verified = serializers.IntegerField(
        help_text="Signed checkpoints whose signature chain verified."
    )
    checkpoint_seq = serializers.IntegerField(
        allow_null=True, help_text="The event the newest verified checkpoint signs."
    )
    checkpoint_created_at = serializers.DateTimeField(allow_null=True)
    checkpoint_key_id = serializers.CharField(
        allow_null=True, help_text="Signing key id (see /api/v1/audit-keys/)."
    )
    checkpoint_signature = serializers.CharField(allow_null=True)
    broken_checkpoint_seq = serializers.IntegerField(
        allow_null=True, help_text="The first checkpoint that failed, if one did."
    )

    @staticmethod
    def from_report(report: Any) -> dict[str, Any]:
        checkpoint = report.checkpoint
        return {
            "ok": report.ok,
            "checked": report.checked,
            "broken_seq": report.broken_seq,
            "broken_event_id": report.broken_event_id,
            "reason": report.reason,
            "mode": report.mode,
            "verified_from_seq": report.from_seq,
            "verified_to_seq": report.to_seq,
            "checkpoints_verified": report.checkpoints_verified,
            "checkpoint_seq": checkpoint.seq if checkpoint else None,
            "checkpoint_created_at": checkpoint.created_at if checkpoint else None,
            "checkpoint_key_id": checkpoint.key_id if checkpoint else None,
            "checkpoint_signature": checkpoint.signature if checkpoint else None,
            "broken_checkpoint_seq": report.broken_checkpoint_seq,
        }


class AuditKeySerializer(serializers.Serializer):
    key_id = serializers.CharField(help_text="First 16 hex digits of SHA-256 of the raw key.")
    algorithm = serializers.CharField()
    status = serializers.ChoiceField(choices=["current", "retired"])
    public_key = serializers.CharField(help_text="The raw 32-byte Ed25519 key, urlsafe base64.")
    public_key_pem = serializers.CharField(help_text="The same key as SubjectPublicKeyInfo PEM.")


class AuditKeysSerializer(serializers.Serializer):
    keys = AuditKeySerializer(many=True)
    checkpoint_payload = serializers.CharField(
        help_text="How a checkpoint's signed payload is encoded (docs/security.md)."
    )
