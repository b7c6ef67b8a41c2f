"""The identity app's API routes; swrly/api.py mounts them under /api/v1/ (namespace `api`)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from swrly.identity.api import views

router = SimpleRouter()
router.register("members", views.MembershipViewSet, basename="member")
router.register("invitations", views.InvitationViewSet, basename="invitation")

urlpatterns = [
    path("mfa-policy/", views.MfaPolicyView.as_view(), name="mfa-policy"),
    *router.urls,
]
