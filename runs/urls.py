from django.urls import path

from runs import views

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
]
