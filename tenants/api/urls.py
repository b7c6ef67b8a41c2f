from django.urls import path
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny
from rest_framework.routers import SimpleRouter

from runs.api.views import RunViewSet, WorkflowViewSet
from swrly.custody.api.routes import ROUTES as custody_routes
from tenants.api import views
from tenants.api.schema_view import SchemaView

app_name = "api"

router = SimpleRouter()
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("members", views.MembershipViewSet, basename="member")
for prefix, viewset, basename in custody_routes:
    router.register(prefix, viewset, basename=basename)
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
