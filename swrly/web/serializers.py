from typing import TYPE_CHECKING, Any

from rest_framework import serializers

if TYPE_CHECKING:  # a mixin for serializers: the type checker reads it as one
    _SerializerBase = serializers.Serializer
else:
    _SerializerBase = object


class StrictSerializerMixin(_SerializerBase):
    """Unknown fields in a write are an error, not silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - {n for n, f in self.fields.items() if not f.read_only})
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)
