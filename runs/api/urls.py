"""The runs app's API routes; swrly/api.py mounts them under /api/v1/ (namespace `api`)."""

from rest_framework.routers import SimpleRouter

from runs.api.views import RunViewSet, WorkflowViewSet

router = SimpleRouter()
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("runs", RunViewSet, basename="run")

urlpatterns = router.urls
