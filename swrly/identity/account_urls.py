"""Sign-in, two-step verification and invitation links: pages of no tenant (no namespace)."""

from django.urls import path

from swrly.identity import views

urlpatterns = [
    path("accounts/login/", views.SignInView.as_view(), name="login"),
    path("accounts/login/verify/", views.MfaVerifyView.as_view(), name="mfa-verify"),
    path("accounts/mfa/", views.MfaSetupView.as_view(), name="mfa-setup"),
    path(
        "invitations/<uuid:invitation_id>/accept/",
        views.InvitationAcceptView.as_view(),
        name="invitation-accept",
    ),
    path(
        "invitations/<uuid:invitation_id>/<str:secret>/",
        views.InvitationOpenView.as_view(),
        name="invitation-open",
    ),
]
