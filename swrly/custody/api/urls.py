"""The custody app's API routes; swrly/api.py mounts them under /api/v1/ (namespace `api`)."""

from rest_framework.routers import SimpleRouter

from swrly.custody.api import views

router = SimpleRouter()
router.register("provider-keys", views.ProviderKeyViewSet, basename="provider-key")
router.register("blocked-keys", views.BlockedKeyViewSet, basename="blocked-key")
router.register("key-rotations", views.KeyRotationViewSet, basename="key-rotation")

urlpatterns = router.urls
