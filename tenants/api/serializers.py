from rest_framework import serializers

from tenants.api.base import StrictSerializerMixin
from tenants.models import (
    ApiToken,
    AuditEvent,
    KeyRotation,
    Membership,
    ProviderKey,
    Role,
    TokenOrigin,
)


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


class MembershipCreatedSerializer(MembershipSerializer):
    one_time_password = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="Set only when the user was created: shown once.",
    )

    class Meta(MembershipSerializer.Meta):
        fields = [*MembershipSerializer.Meta.fields, "one_time_password"]


class KeyRotationSerializer(serializers.ModelSerializer):
    rewrapped_in_tenant = serializers.IntegerField(
        read_only=True, help_text="How many of this tenant's tokens the rotation rewrapped."
    )

    class Meta:
        model = KeyRotation
        fields = [
            "id",
            "started_at",
            "finished_at",
            "actor",
            "from_key_ids",
            "to_key_id",
            "outcome",
            "rewrapped_in_tenant",
        ]
        read_only_fields = fields


class ProviderKeySerializer(serializers.ModelSerializer):
    replaced_by = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="The fingerprint of the next key first seen for the same provider, if any.",
    )

    class Meta:
        model = ProviderKey
        fields = [
            "id",
            "provider",
            "fingerprint",
            "hint",
            "first_seen_at",
            "last_seen_at",
            "use_count",
            "replaced_by",
        ]
        read_only_fields = fields


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
        ]
        read_only_fields = fields


class ChainStatusSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="True when every event of the chain verifies.")
    checked = serializers.IntegerField(help_text="Events verified before the first break.")
    broken_seq = serializers.IntegerField(allow_null=True)
    broken_event_id = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField(allow_blank=True)
