from django.urls import path

from swrly.custody import views

app_name = "custody"

urlpatterns = [
    path("", views.KeyHistoryView.as_view(), name="key-history"),
]
