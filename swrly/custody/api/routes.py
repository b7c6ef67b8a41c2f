"""The custody routes, mounted under /api/v1/ (namespace `api`) by the one API URLconf."""

from swrly.custody.api import views

ROUTES = [
    ("provider-keys", views.ProviderKeyViewSet, "provider-key"),
    ("key-rotations", views.KeyRotationViewSet, "key-rotation"),
]
