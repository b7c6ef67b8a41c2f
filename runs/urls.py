from django.urls import path

from runs import trigger_views, views

app_name = "runs"

urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("runs/", views.RunListView.as_view(), name="run-list"),
    path("runs/<uuid:run_id>/", views.RunDetailView.as_view(), name="run-detail"),
    path(
        "runs/<uuid:run_id>/download/<slug:part>/",
        views.RunValueView.as_view(),
        name="run-value",
    ),
    path(
        "workflows/<uuid:workflow_id>/run/",
        trigger_views.RunTriggerView.as_view(),
        name="run-trigger",
    ),
    path("runs/<uuid:run_id>/cancel/", trigger_views.RunCancelView.as_view(), name="run-cancel"),
]
