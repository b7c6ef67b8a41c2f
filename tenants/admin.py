"""Read-only views for platform superusers.

Every change goes through the pages, the API or the commands, which write the audit event in
the same transaction; the admin would bypass that, so it changes nothing.
"""

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from swrly.audit.models import AuditEvent
from tenants.models import ApiToken, Membership, Tenant


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Tenant)
class TenantAdmin(ReadOnlyAdmin):
    list_display = ["slug", "name", "max_queued_runs", "max_running_runs", "created_at"]
    search_fields = ["slug", "name"]


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "user", "role"]
    list_filter = ["role"]


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = [
        "tenant",
        "name",
        "role",
        "display_prefix",
        "created_via",
        "created_by",
        "last_used_at",
        "revoked_at",
    ]
    exclude = ["digest"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "tenant", "action", "actor", "target"]
    list_filter = ["action"]
