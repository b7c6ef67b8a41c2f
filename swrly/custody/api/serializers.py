from rest_framework import serializers

from swrly.custody.models import KeyRotation, ProviderKey


class KeyRotationSerializer(serializers.ModelSerializer[KeyRotation]):
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


class ProviderKeySerializer(serializers.ModelSerializer[ProviderKey]):
    replaced_by = serializers.CharField(
        source="successor_fingerprint",
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
