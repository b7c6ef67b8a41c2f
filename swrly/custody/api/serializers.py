from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from swrly.custody.models import BlockedKey, KeyRotation, ProviderKey
from swrly.keys.fingerprint import FINGERPRINT_PATTERN
from swrly.keys.secret import ProviderSecret
from swrly.keys.store import KEY_ALPHABET, KEY_ALPHABET_TEXT, KEY_MAX_LENGTH, KEY_MIN_LENGTH
from swrly.providers import PROVIDER_NAMES
from swrly.web.serializers import StrictSerializerMixin


class KeyRotationSerializer(serializers.ModelSerializer[KeyRotation]):
    rewrapped_in_tenant = serializers.IntegerField(
        read_only=True, help_text="How many of this tenant's stored keys the rotation rewrapped."
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


class FingerprintSaltSerializer(serializers.Serializer[Any]):
    salt = serializers.CharField(
        help_text="The tenant's fingerprint salt: 32 bytes, hex. A key's fingerprint is "
        '"v2:" + HMAC-SHA256(salt, provider + "\\x00" + key), hex (docs/security.md).'
    )
    version = serializers.IntegerField(help_text="The fingerprint version this salt makes: 2.")
    message = serializers.CharField(help_text='What is MACed: "{provider}\\x00{key}", UTF-8.')


class BlockedKeySerializer(serializers.ModelSerializer[BlockedKey]):
    class Meta:
        model = BlockedKey
        fields = ["id", "provider", "fingerprint", "hint", "reason", "created_by", "created_at"]
        read_only_fields = fields


class BlockedKeyCreatedSerializer(BlockedKeySerializer):
    cancelled_runs = serializers.IntegerField(
        read_only=True, help_text="Queued or running runs holding the key, cancelled."
    )

    class Meta(BlockedKeySerializer.Meta):
        fields = [*BlockedKeySerializer.Meta.fields, "cancelled_runs"]
        read_only_fields = fields


@extend_schema_field(
    {
        "type": "string",
        "writeOnly": True,
        "pattern": f"^{KEY_ALPHABET.pattern}$",
        "minLength": KEY_MIN_LENGTH,
        "maxLength": KEY_MAX_LENGTH,
    }
)
class SecretKeyField(serializers.Field[Any, Any, Any, Any]):
    """A key to fingerprint: held in a ProviderSecret (redacted everywhere) from the start.

    Only a key that could be deposited (the key store's alphabet and lengths) can be presented
    by a run, so only such a key is accepted here; the error never repeats it.
    """

    def to_representation(self, value: Any) -> str:
        raise TypeError("a key is never shown")

    def to_internal_value(self, data: Any) -> ProviderSecret:
        if not isinstance(data, str) or not data:
            raise serializers.ValidationError("a non-empty string")
        if not KEY_MIN_LENGTH <= len(data) <= KEY_MAX_LENGTH:
            raise serializers.ValidationError(f"{KEY_MIN_LENGTH} to {KEY_MAX_LENGTH} characters")
        if not KEY_ALPHABET.fullmatch(data):
            raise serializers.ValidationError(f"only {KEY_ALPHABET_TEXT}")
        return ProviderSecret(data)


class BlockedKeyCreateSerializer(StrictSerializerMixin, serializers.Serializer[Any]):
    provider = serializers.ChoiceField(choices=list(PROVIDER_NAMES))
    fingerprint = serializers.RegexField(
        r"^([vV]2:)?[0-9a-fA-F]{64}$",
        max_length=67,
        help_text='"v2:" and 64 hex characters (or a legacy fingerprint, 64 hex characters).',
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")

    def validate_fingerprint(self, value: str) -> str:
        value = value.lower()
        if not FINGERPRINT_PATTERN.fullmatch(value):  # `$` lets a final newline through
            raise serializers.ValidationError('"v2:" and 64 hex characters')
        return value


class BlockedKeyFromKeySerializer(StrictSerializerMixin, serializers.Serializer[Any]):
    provider = serializers.ChoiceField(choices=list(PROVIDER_NAMES))
    key = SecretKeyField(
        write_only=True,
        help_text="The compromised key itself: fingerprinted at once, never stored or logged.",
    )
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")
