from rest_framework import serializers

from tenants.models import ApiToken


class MeSerializer(serializers.Serializer):
    tenant = serializers.SlugField(source="token.tenant.slug")
    token_name = serializers.CharField(source="token.name")
    role = serializers.CharField(source="token.role")


class ApiTokenSerializer(serializers.ModelSerializer):
    prefix = serializers.CharField(source="display_prefix", read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "role",
            "prefix",
            "created_by",
            "created_at",
            "last_used_at",
            "revoked_at",
        ]
        read_only_fields = fields
