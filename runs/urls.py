from django.urls import path

from runs import trigger_views, views, workflow_views

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

urlpatterns += [
    path("workflows/", workflow_views.WorkflowListView.as_view(), name="workflow-list"),
    path("workflows/new/", workflow_views.WorkflowCreateView.as_view(), name="workflow-create"),
    path(
        "workflows/<uuid:workflow_id>/",
        workflow_views.WorkflowDetailView.as_view(),
        name="workflow-detail",
    ),
    path(
        "workflows/<uuid:workflow_id>/edit/",
        workflow_views.WorkflowEditView.as_view(),
        name="workflow-edit",
    ),
    path(
        "workflows/<uuid:workflow_id>/duplicate/",
        workflow_views.WorkflowDuplicateView.as_view(),
        name="workflow-duplicate",
    ),
    path(
        "workflows/<uuid:workflow_id>/delete/",
        workflow_views.WorkflowDeleteView.as_view(),
        name="workflow-delete",
    ),
    path(
        "workflows/<uuid:workflow_id>/preview/",
        workflow_views.WorkflowPreviewView.as_view(),
        name="workflow-preview",
    ),
]
