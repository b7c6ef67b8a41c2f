from django.urls import path

from tenants import policy_views, views, webhook_views

app_name = "tenants"

urlpatterns = [
    path("audit/", views.AuditListView.as_view(), name="audit-list"),
    path(
        "audit/export.csv",
        views.AuditExportView.as_view(export_format="csv"),
        name="audit-export-csv",
    ),
    path(
        "audit/export.jsonl",
        views.AuditExportView.as_view(export_format="jsonl"),
        name="audit-export-jsonl",
    ),
    path(
        "audit/webhooks/",
        webhook_views.AuditWebhookListView.as_view(),
        name="audit-webhook-list",
    ),
    path(
        "audit/webhooks/add/",
        webhook_views.AuditWebhookAddView.as_view(),
        name="audit-webhook-add",
    ),
    path(
        "audit/webhooks/<uuid:webhook_id>/delete/",
        webhook_views.AuditWebhookDeleteView.as_view(),
        name="audit-webhook-delete",
    ),
    path("members/", views.MemberListView.as_view(), name="member-list"),
    path("members/<uuid:membership_id>/role/", views.MemberRoleView.as_view(), name="member-role"),
    path(
        "members/<uuid:membership_id>/remove/",
        views.MemberRemoveView.as_view(),
        name="member-remove",
    ),
    path("tokens/", views.ApiTokenListView.as_view(), name="apitoken-list"),
    path(
        "tokens/<uuid:token_id>/revoke/", views.ApiTokenRevokeView.as_view(), name="apitoken-revoke"
    ),
    path(
        "members/<uuid:membership_id>/unlock/",
        views.MemberUnlockView.as_view(),
        name="member-unlock",
    ),
    path("settings/", policy_views.TenantSettingsView.as_view(), name="tenant-settings"),
]
