from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny
from rest_framework.routers import SimpleRouter

from runs.api.views import RunViewSet, WorkflowViewSet
from tenants.api import views

app_name = "api"

router = SimpleRouter()
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("runs", RunViewSet, basename="run")

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path(
        "schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]),
        name="schema",
    ),
    *router.urls,
]
