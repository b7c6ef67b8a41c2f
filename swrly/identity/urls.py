"""The identity app's tenant pages, mounted under /t/<tenant-slug>/ (namespace `identity`)."""

from django.urls import path

from swrly.identity import views

app_name = "identity"

urlpatterns = [
    path("members/add/", views.InvitationCreateView.as_view(), name="member-add"),
    path("members/invitations/", views.InvitationListView.as_view(), name="invitation-list"),
    path(
        "members/invitations/<uuid:invitation_id>/revoke/",
        views.InvitationRevokeView.as_view(),
        name="invitation-revoke",
    ),
    path("settings/mfa/", views.MfaPolicyView.as_view(), name="mfa-policy"),
]
