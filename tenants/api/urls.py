from django.urls import path
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny
from rest_framework.routers import SimpleRouter

from runs.api.views import RunViewSet, WorkflowViewSet
from tenants.api import views
from tenants.api.schema_view import SchemaView

app_name = "api"

router = SimpleRouter()
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("members", views.MembershipViewSet, basename="member")
router.register("provider-keys", views.ProviderKeyViewSet, basename="provider-key")
router.register("key-rotations", views.KeyRotationViewSet, basename="key-rotation")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("runs", RunViewSet, basename="run")

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("audit-keys/", views.AuditKeysView.as_view(), name="audit-keys"),
    path(
        "schema/",
        SchemaView.as_view(authentication_classes=[], permission_classes=[AllowAny]),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="api:schema", authentication_classes=[], permission_classes=[AllowAny]
        ),
        name="docs",
    ),
    *router.urls,
]
