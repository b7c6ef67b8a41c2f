from django.urls import path

from tenants import views

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
    path("members/", views.MemberListView.as_view(), name="member-list"),
    path("members/add/", views.MemberAddView.as_view(), name="member-add"),
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
]
