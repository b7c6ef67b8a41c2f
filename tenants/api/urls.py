"""The tenants app's API routes; swrly/api.py mounts them under /api/v1/ (namespace `api`)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from tenants.api import policy_views, views, webhook_views

router = SimpleRouter()
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")
router.register("audit-webhooks", webhook_views.AuditWebhookViewSet, basename="audit-webhook")

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("audit-keys/", views.AuditKeysView.as_view(), name="audit-keys"),
    *router.urls,
    path("policy/", policy_views.PolicyView.as_view(), name="policy"),
]
