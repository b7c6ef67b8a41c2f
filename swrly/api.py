"""The one /api/v1/ URLconf (namespace `api`): the schema and its docs page, and each app's
routes, which the app declares in its own `api/urls.py`."""

from django.urls import path
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny

from runs.api.urls import urlpatterns as runs_routes
from swrly.custody.api.urls import urlpatterns as custody_routes
from swrly.evidence.api.urls import urlpatterns as evidence_routes
from swrly.identity.api.urls import urlpatterns as identity_routes
from swrly.web.schema_view import SchemaJsonView, SchemaView
from tenants.api.urls import urlpatterns as tenants_routes

app_name = "api"

urlpatterns = [
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
    *tenants_routes,
    *custody_routes,
    *runs_routes,
    *evidence_routes,
    # The schema again, always as JSON whatever the Accept header: the URL for generators.
    path(
        "schema.json",
        SchemaJsonView.as_view(authentication_classes=[], permission_classes=[AllowAny]),
        name="schema-json",
    ),
    *identity_routes,
]
