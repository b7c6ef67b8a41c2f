"""Read-only admin for key custody records (platform superusers only; see tenants.admin)."""

from django.contrib import admin

from swrly.custody.models import BlockedKey, KeyRotation, ProviderKey
from tenants.admin import ReadOnlyAdmin


@admin.register(ProviderKey)
class ProviderKeyAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "provider", "hint", "first_seen_at", "last_seen_at", "use_count"]


@admin.register(KeyRotation)
class KeyRotationAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "finished_at", "actor", "to_key_id", "rewrapped", "outcome"]


@admin.register(BlockedKey)
class BlockedKeyAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "provider", "fingerprint", "hint", "created_by", "created_at"]
