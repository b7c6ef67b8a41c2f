from django.urls import path

from swrly.custody import views

app_name = "custody"

urlpatterns = [
    path("", views.KeyHistoryView.as_view(), name="key-history"),
    path("blocked/add/", views.BlockedKeyAddView.as_view(), name="blocked-key-add"),
    path(
        "blocked/<uuid:blocked_key_id>/remove/",
        views.BlockedKeyRemoveView.as_view(),
        name="blocked-key-remove",
    ),
]
