"""The evidence API route; swrly/api.py mounts it under /api/v1/ (namespace `api`)."""

from rest_framework.routers import SimpleRouter

from swrly.evidence.api import views

router = SimpleRouter()
router.register("evidence", views.EvidenceViewSet, basename="evidence")

urlpatterns = router.urls
