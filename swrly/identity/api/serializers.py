from rest_framework import serializers

from swrly.identity.models import Invitation, TenantMfaPolicy
from swrly.web.serializers import StrictSerializerMixin
from tenants.models import Role


class InvitationSerializer(StrictSerializerMixin, serializers.ModelSerializer):
    """An invitation as its tenant's managers see it: never its link or secret."""

    role = serializers.ChoiceField(choices=Role.choices)
    status = serializers.CharField(
        read_only=True, help_text="pending, accepted, revoked or expired."
    )
    invited_by = serializers.CharField(
        source="invited_by_label",
        read_only=True,
        help_text="Who invited, as the audit log names them.",
    )

    class Meta:
        model = Invitation
        fields = [
            "id",
            "email",
            "role",
            "status",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        ]
        read_only_fields = [
            "id",
            "status",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        ]


class MfaPolicySerializer(StrictSerializerMixin, serializers.ModelSerializer):
    required_roles = serializers.ListField(
        child=serializers.ChoiceField(choices=Role.choices),
        allow_empty=True,
        help_text="Roles whose members must sign in to the pages with a second factor.",
    )
    updated_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When an owner last changed the policy; null while it was never set.",
    )

    class Meta:
        model = TenantMfaPolicy
        fields = ["required_roles", "updated_at"]
        read_only_fields = ["updated_at"]
